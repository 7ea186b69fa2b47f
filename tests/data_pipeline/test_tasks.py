"""Synthetic recall tasks: S-NIAH (passkey / number / uuid) and MQAR, and their registry entries."""

import numpy as np
import pytest

from titans_jax.configs import base_config
from titans_jax.data import make_batches, make_iterator, make_source
from titans_jax.data.tasks import (HAYSTACKS, NIAH_TASKS, MqarSource, NeedleInHaystackSource,
                                   max_sentence_len)

FLAVOURS = [(task, haystack) for task in NIAH_TASKS for haystack in HAYSTACKS]


def stream_of(example):
  """The seq_len + 1 token stream an example was cut from, as bytes."""
  tokens = np.append(example["inputs"], example["targets"][-1])
  return bytes(tokens.astype(np.uint8))


def needle_of(sample, task):
  """The needle sentence(s) the sample should hide, rebuilt from its answer and key."""
  answer, key = sample["answer"], sample["key"]
  if task == "passkey":
    return b" The pass key is " + answer + b". Remember it. " + answer + b" is the pass key."
  kind = b"numbers" if task == "number" else b"uuids"
  return b" One of the special magic " + kind + b" for " + key + b" is: " + answer + b"."


@pytest.mark.parametrize("task,haystack", FLAVOURS)
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0, None])
def test_niah_answer_is_in_the_context_at_its_depth(task, haystack, depth):
  seq_len = 700
  source = NeedleInHaystackSource(seq_len=seq_len, task=task, haystack=haystack, depth=depth,
                                  seed=5)
  for index in range(3):
    sample = source.sample(index)
    stream = stream_of(sample)
    assert sample["inputs"].shape == sample["targets"].shape == sample["weights"].shape
    assert sample["inputs"].shape == (seq_len,) and len(stream) == seq_len + 1
    assert sample["inputs"].dtype == np.int32 and sample["weights"].dtype == np.float32
    answer, start, needle = sample["answer"], sample["needle_start"], needle_of(sample, task)
    assert stream[start:start + len(needle)] == needle and answer in needle
    assert sample["needle_end"] == start + len(needle)
    assert stream.endswith(answer) and len(answer) == (36 if task == "uuid" else 7)
    assert (task == "passkey") == (sample["key"] == b"")
    assert stream.count(answer) == needle.count(answer) + 1  # nowhere else in the haystack
    # Depth is a fraction of the haystack: all but needle, question and answer.
    haystack_len = stream.index(b" What is the ", start) - len(needle)
    if depth is not None:
      assert sample["depth"] == depth
    assert 0.0 <= sample["depth"] <= 1.0
    assert abs(start - sample["depth"] * haystack_len) <= max_sentence_len(haystack)


@pytest.mark.parametrize("task,haystack", FLAVOURS)
def test_niah_weights_only_on_answer_tokens(task, haystack):
  source = NeedleInHaystackSource(seq_len=512, task=task, haystack=haystack)
  sample = source.sample(7)
  weighted = np.flatnonzero(sample["weights"])
  assert set(np.unique(sample["weights"])) == {0.0, 1.0}
  answer = sample["answer"]
  np.testing.assert_array_equal(weighted, np.arange(512 - len(answer), 512))
  assert weighted[0] == sample["answer_start"] - 1
  assert bytes(sample["targets"][weighted].astype(np.uint8)) == answer
  # Greedy decoding starts from the prompt inputs[:answer_start].
  assert stream_of(sample)[sample["answer_start"]:] == answer


@pytest.mark.parametrize("task,haystack", FLAVOURS)
def test_niah_is_a_pure_function_of_seed_and_index(task, haystack):
  make = lambda seed: NeedleInHaystackSource(seq_len=400, task=task, haystack=haystack, seed=seed)
  a, b, other_seed = make(1), make(1), make(2)
  for index in (0, 3):
    for name in ("inputs", "targets", "weights"):
      np.testing.assert_array_equal(a[index][name], b[index][name])
    assert a.sample(index)["answer"] == b.sample(index)["answer"]
  answers = {a.sample(index)["answer"] for index in range(8)}
  assert len(answers) == 8  # different index -> different needle
  assert a.sample(0)["answer"] != other_seed.sample(0)["answer"]
  assert set(a[0]) == {"inputs", "targets", "weights"}  # only arrays reach the batcher


def test_niah_fixed_depth_moves_only_the_needle():
  # A depth sweep (the RULER grid) evaluates the same needles and haystacks.
  make = lambda depth: NeedleInHaystackSource(seq_len=600, task="number", haystack="essay",
                                              depth=depth, seed=3).sample(4)
  shallow, deep = make(0.1), make(0.9)
  assert shallow["answer"] == deep["answer"] and shallow["key"] == deep["key"]
  assert shallow["needle_start"] < deep["needle_start"]
  assert sorted(stream_of(shallow)) == sorted(stream_of(deep))


def test_niah_haystacks_differ():
  noise = NeedleInHaystackSource(seq_len=800, task="passkey", haystack="noise", depth=1.0)
  essay = NeedleInHaystackSource(seq_len=800, task="passkey", haystack="essay", depth=1.0)
  assert stream_of(noise[0]).startswith(b" The grass is green. The sky is blue.")
  texts = [stream_of(essay[index])[:300] for index in range(2)]
  assert texts[0] != texts[1] and b"grass is green" not in texts[0]
  assert all(byte < 128 for byte in texts[0])  # plain ASCII text


@pytest.mark.parametrize("task", NIAH_TASKS)
def test_niah_minimum_length(task):
  minimum = NeedleInHaystackSource.min_seq_len(task)
  source = NeedleInHaystackSource(seq_len=minimum, task=task, haystack="essay")
  for index in range(20):  # every key fits, even with no haystack left
    sample = source.sample(index)
    assert len(stream_of(sample)) == minimum + 1 and stream_of(sample).endswith(sample["answer"])
  with pytest.raises(ValueError, match=f"seq_len >= {minimum}"):
    NeedleInHaystackSource(seq_len=minimum - 1, task=task)


@pytest.mark.parametrize("kwargs,message", [
    ({"task": "words"}, "task='words' is unknown"),
    ({"haystack": "paul_graham"}, "haystack='paul_graham' is unknown"),
    ({"depth": 1.5}, r"depth=1.5 must lie in \[0, 1\]"),
    ({"depth": -0.1}, r"must lie in \[0, 1\]"),
])
def test_niah_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    NeedleInHaystackSource(seq_len=512, **kwargs)


@pytest.mark.parametrize("filler", ["zeros", "random"])
def test_mqar_queries_recall_earlier_pairs(filler):
  source = MqarSource(seq_len=128, num_pairs=6, num_queries=4, filler=filler, seed=2)
  for index in range(5):
    sample = source.sample(index)
    tokens = np.append(sample["inputs"], sample["targets"][-1])
    assert tokens.shape == (129,) and sample["inputs"].dtype == np.int32
    keys, values = sample["keys"], sample["values"]
    assert len(set(keys.tolist())) == 6 and not set(keys.tolist()) & set(values.tolist())
    np.testing.assert_array_equal(tokens[0:12:2], keys)
    np.testing.assert_array_equal(tokens[1:12:2], values)
    positions = sample["query_positions"]
    np.testing.assert_array_equal(np.flatnonzero(sample["weights"]), positions)
    for position in positions:
      key, value = tokens[position], sample["targets"][position]
      first = int(np.flatnonzero(tokens == key)[0])
      assert first < 12 and tokens[first + 1] == value  # paired earlier with the target value
      assert first < position
    np.testing.assert_array_equal(sample["targets"][positions], sample["query_values"])
    filler_tokens = tokens[12:129 - 8]
    assert not np.isin(filler_tokens, keys).any()  # a key appears only in its pair and queries
    if filler == "zeros":
      assert not filler_tokens.any()


def test_mqar_determinism_and_defaults():
  a, b = MqarSource(seq_len=64, seed=1), MqarSource(seq_len=64, seed=1)
  for name in ("inputs", "targets", "weights"):
    np.testing.assert_array_equal(a[3][name], b[3][name])
  assert not np.array_equal(a[3]["inputs"], a[4]["inputs"])
  assert a.sample(0)["query_keys"].shape == (8,)  # every pair queried by default
  assert int(a[0]["weights"].sum()) == 8 and len(a) == 1 << 30
  small = MqarSource(seq_len=32, num_pairs=4, vocab_size=16)
  assert small[0]["inputs"].max() < 16


@pytest.mark.parametrize("kwargs,message", [
    ({"num_pairs": 8, "vocab_size": 16}, "vocab_size >= 17"),
    ({"num_pairs": 8, "seq_len": 30}, "seq_len >= 31"),
    ({"num_pairs": 4, "num_queries": 5}, "num_queries <= num_pairs"),
    ({"filler": "ones"}, "filler='ones' is unknown"),
])
def test_mqar_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    MqarSource(**{"seq_len": 64, **kwargs})


def data_config(**fields):
  config = base_config(model={}).data
  config.update(fields)
  return config


def test_registry_builds_niah_and_mqar():
  config = data_config(source="niah", task="uuid", haystack="essay", needle_depth=0.25,
                       seq_len=512, seed=4)
  train = make_source(config, split="train", vocab_size=256)
  evaluation = make_source(config, split="eval", vocab_size=256)
  assert isinstance(train, NeedleInHaystackSource) and train.depth == 0.25
  assert train.sample(0)["answer"] != evaluation.sample(0)["answer"]  # eval seed differs
  assert make_source(data_config(source="niah"), split="train", vocab_size=256).depth is None

  config = data_config(source="mqar", mqar_pairs=5, mqar_queries=2, mqar_filler="zeros",
                       seq_len=64)
  mqar = make_source(config, split="train", vocab_size=32)
  assert isinstance(mqar, MqarSource) and mqar.vocab_size == 32 and mqar.num_queries == 2
  assert make_source(data_config(source="mqar", seq_len=64), split="train",
                     vocab_size=256).num_queries == 8
  batch = next(make_iterator(make_batches(mqar, global_batch_size=4, seed=0), prefetch_threads=0))
  assert batch["inputs"].shape == (4, 64) and batch["weights"].sum() == 8


@pytest.mark.parametrize("fields,vocab_size,message", [
    ({"source": "niah", "task": "words"}, 256, "data.task='words' is unknown"),
    ({"source": "niah", "haystack": "pg"}, 256, "data.haystack='pg' is unknown"),
    ({"source": "niah", "needle_depth": 1.2}, 256, "data.needle_depth=1.2"),
    ({"source": "niah", "needle_depth": -0.5}, 256, "data.needle_depth=-0.5"),
    ({"source": "niah"}, 100, "model.vocab_size >= 256"),
    ({"source": "niah", "task": "uuid", "seq_len": 100}, 256, "data.seq_len >= 296"),
    ({"source": "mqar", "mqar_filler": "ones"}, 256, "data.mqar_filler='ones' is unknown"),
    ({"source": "mqar", "mqar_pairs": 0}, 256, "data.mqar_pairs=0"),
    ({"source": "mqar", "mqar_pairs": 4, "mqar_queries": 5}, 256, "data.mqar_queries=5"),
    ({"source": "mqar", "mqar_pairs": 8}, 10, "model.vocab_size >= 17"),
    ({"source": "mqar", "mqar_pairs": 8, "seq_len": 20}, 256, "seq_len >= 31"),
])
def test_registry_rejects_bad_settings(fields, vocab_size, message):
  with pytest.raises(ValueError, match=message):
    make_source(data_config(**fields), split="train", vocab_size=vocab_size)
