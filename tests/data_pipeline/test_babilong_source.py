"""The BABILong fine-tuning source: byte examples with loss on the answer only, examples
that do not fit, the registry, and experiments/babilong_mac.py:runlocal end to end."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from titans_jax import configs
from titans_jax.data import babilong, make_batches, make_iterator, make_source

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEOPLE = ("Mary", "John", "Sandra", "Daniel")


def write_data(root, lengths=("0k",), tasks=babilong.DEFAULT_TASKS, count=4, filler=""):
  """<root>/<length>/<task>.jsonl of short bAbI-like stories."""
  for length in lengths:
    os.makedirs(root / length, exist_ok=True)
    for task in tasks:
      labels = babilong.TASK_LABELS[task]
      with open(root / length / f"{task}.jsonl", "w") as handle:
        for i in range(count):
          person, target = PEOPLE[i % 4], labels[i % len(labels)]
          story = f"{person} went to the hallway.{filler} {person} moved to the {target}."
          handle.write(json.dumps({"input": story, "question": f"Where is {person}?",
                                   "target": target}) + "\n")
  return str(root)


def text_of(tokens) -> bytes:
  return bytes(np.asarray(tokens, np.uint8).tolist())


def test_examples_are_bytes_with_loss_on_the_answer_only(tmp_path):
  root = write_data(tmp_path, tasks=("qa1", "qa5"))
  source = babilong.BabilongSource(root, seq_len=128, tasks="qa1,qa5")
  assert len(source) == 8 and source.vocab_size == 256
  example = source.sample(5)  # qa5's second record
  assert example["task"] == "qa5" and example["target"] == "Fred"
  inputs, targets, weights = example["inputs"], example["targets"], example["weights"]
  assert inputs.shape == targets.shape == weights.shape == (128,)
  assert inputs.dtype == targets.dtype == np.int32 and weights.dtype == np.float32
  np.testing.assert_array_equal(inputs[1:], targets[:-1])
  stream = text_of(np.concatenate([inputs[:1], targets]))
  prompt = b"John went to the hallway. John moved to the Fred.\nQuestion: Where is John?\nAnswer:"
  assert stream.startswith(prompt + b" Fred.")
  assert text_of(targets[weights > 0]) == b" Fred."  # the answer's bytes, nothing else
  assert example["answer_start"] == len(prompt)
  assert stream[len(prompt) + 6:] == b"\0" * (129 - len(prompt) - 6)  # right padding, no loss
  assert set(source[0]) == {"inputs", "targets", "weights"}


def test_an_example_longer_than_seq_len_is_an_error_or_cut_from_the_left(tmp_path):
  root = write_data(tmp_path, tasks=("qa1",), filler=" Filler sentence." * 8)
  with pytest.raises(ValueError, match=r"qa1.jsonl:1: 4 example\(s\) do not fit data.seq_len=64; "
                     r"this one needs 2\d\d byte tokens"):
    babilong.BabilongSource(root, seq_len=64, tasks="qa1")
  source = babilong.BabilongSource(root, seq_len=64, tasks="qa1", truncate=True)
  example = source.sample(0)
  stream = text_of(np.concatenate([example["inputs"][:1], example["targets"]]))
  assert len(stream) == 65 and example["cut"] > 0
  assert stream.endswith(b".\nQuestion: Where is Mary?\nAnswer: bathroom.")  # question kept
  assert text_of(example["targets"][example["weights"] > 0]) == b" bathroom."
  with pytest.raises(ValueError, match="question and answer alone take"):
    babilong.BabilongSource(root, seq_len=16, tasks="qa1", truncate=True)


def test_bad_folders_tasks_and_records_are_clear_errors(tmp_path):
  root = write_data(tmp_path, tasks=("qa1",))
  for kwargs, message in (({"tasks": "qa2"}, "0k/qa2.jsonl' does not exist"),
                          ({"tasks": "qa0"}, "unknown; expected one of qa1 .. qa20"),
                          ({"tasks": "qa1", "lengths": ""}, "no BABILong lengths"),
                          ({"tasks": "qa1", "prompt": "chat"}, "expected one of")):
    with pytest.raises(ValueError, match=message):
      babilong.BabilongSource(root, seq_len=128, **kwargs)
  (tmp_path / "0k" / "qa1.jsonl").write_text('{"input": "a", "question": "b", "target": "c"}\n{')
  with pytest.raises(ValueError, match="qa1.jsonl:2 is not JSON"):
    babilong.BabilongSource(root, seq_len=128, tasks="qa1")


def babilong_data_config(root, **fields):
  config = configs.base_config(model={"vocab_size": 256})
  config.data.source = "babilong"
  config.data.seq_len = 128
  config.data.train_path = root
  config.data.babilong_tasks = "qa1,qa2"
  config.data.update(fields)
  return config.data


def test_the_registry_builds_it_and_the_pipeline_batches_it(tmp_path):
  train_root = write_data(tmp_path / "train", lengths=("0k", "1k"), tasks=("qa1", "qa2"))
  eval_root = write_data(tmp_path / "eval", lengths=("0k", "1k"), tasks=("qa1", "qa2"), count=1)
  data_config = babilong_data_config(train_root, babilong_lengths="0k,1k", eval_path=eval_root)
  train = make_source(data_config, split="train", vocab_size=256)
  assert isinstance(train, babilong.BabilongSource) and len(train) == 2 * 2 * 4
  assert len(make_source(data_config, split="eval", vocab_size=256)) == 2 * 2
  batch = next(make_iterator(make_batches(train, global_batch_size=4, seed=0)))
  assert batch["inputs"].shape == (4, 128) and batch["weights"].sum(axis=1).min() >= 3
  with pytest.raises(ValueError, match="needs data.train_path"):
    make_source(babilong_data_config(""), split="train", vocab_size=256)
  with pytest.raises(ValueError, match="model.vocab_size >= 256"):
    make_source(data_config, split="train", vocab_size=100)
  config = ml_collections.ConfigDict(data_config.to_dict())
  config.babilong_prompt, config.seq_len = "instruct", 1200  # the instructions take ~900 bytes
  assert make_source(config, split="train", vocab_size=256).prompt == "instruct"


def test_babilong_mac_runlocal_trains_end_to_end_through_main(tmp_path):
  # Given generated qa1-qa5 files and the experiment's runlocal setting
  root = write_data(tmp_path / "data")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "titans_jax.main",
                         "--config=experiments/babilong_mac.py:runlocal",
                         f"--workdir={tmp_path / 'run'}", f"--config.data.train_path={root}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  # Then a small MAC trains its steps on the answers and leaves a checkpoint
  metrics = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert metrics[-1]["step"] == 4 and np.isfinite(metrics[-1]["loss"])
  assert "Checkpoints:" in done.stdout
  saved = json.load(open(tmp_path / "run" / "config.json"))
  assert saved["model"]["variant"] == "mac" and saved["data"]["source"] == "babilong"
