"""Grain sources and the batching pipeline: deterministic, per-process, resumable."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from titans_jax.data import (ByteTextSource, RandomTokenSource, TfdsTextSource, make_batches,
                             make_iterator)


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_same_seed_same_batches_other_seed_other_batches():
  source = RandomTokenSource(vocab_size=100, seq_len=8, num_records=50)
  a = take(make_iterator(make_batches(source, global_batch_size=4, seed=3)), 5)
  b = take(make_iterator(make_batches(source, global_batch_size=4, seed=3)), 5)
  c = take(make_iterator(make_batches(source, global_batch_size=4, seed=4)), 5)
  assert all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, b))
  assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))
  assert a[0]["inputs"].shape == (4, 8) and a[0]["inputs"].dtype == np.int32
  np.testing.assert_array_equal(a[0]["inputs"][:, 1:], a[0]["targets"][:, :-1])


def test_processes_read_disjoint_rows_of_the_same_global_batch():
  source = RandomTokenSource(vocab_size=100, seq_len=8)
  whole = take(make_iterator(make_batches(source, global_batch_size=6, seed=0)), 3)
  parts = [take(make_iterator(make_batches(source, global_batch_size=6, seed=0, process_index=p,
                                           process_count=3)), 3) for p in range(3)]
  for step in range(3):
    joined = np.concatenate([parts[p][step]["inputs"] for p in range(3)])
    np.testing.assert_array_equal(joined, whole[step]["inputs"])
  with pytest.raises(ValueError, match="does not divide"):
    make_batches(source, global_batch_size=5, seed=0, process_count=2)


def test_iterator_state_resumes_exactly():
  source = RandomTokenSource(vocab_size=100, seq_len=8, num_records=10)  # epochs wrap
  batches = make_batches(source, global_batch_size=4, seed=1)
  iterator = make_iterator(batches)
  take(iterator, 3)
  state = iterator.get_state()
  expected = take(iterator, 6)
  resumed = make_iterator(batches)
  resumed.set_state(state)
  for x, y in zip(expected, take(resumed, 6)):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])


def test_byte_text_source(tmp_path):
  (tmp_path / "a.txt").write_bytes(b"hello world, ")
  (tmp_path / "b.txt").write_bytes(b"titans remember")
  source = ByteTextSource(str(tmp_path / "*.txt"), seq_len=5)
  assert len(source) == (13 + 15 - 1) // 5
  first = source[0]
  assert bytes(first["inputs"].astype(np.uint8)) == b"hello"
  assert bytes(first["targets"].astype(np.uint8)) == b"ello "
  with pytest.raises(ValueError, match="matches no readable file"):
    ByteTextSource(str(tmp_path / "missing*.txt"), seq_len=5)
  with pytest.raises(ValueError, match="at least"):
    ByteTextSource(str(tmp_path / "a.txt"), seq_len=100)


class TinyText(tfds.core.GeneratorBasedBuilder):
  """A two-split text dataset built locally as ArrayRecord (no download)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self,
                                 features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(12), "validation": self._generate_examples(3)}

  def _generate_examples(self, count):
    for index in range(count):
      yield index, {"text": f"record {index}: " + "abc" * index}


def test_tfds_array_record_source(tmp_path):
  TinyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  source = TfdsTextSource("tiny_text", split="train", seq_len=16, data_dir=str(tmp_path))
  assert len(source) == 12
  texts = {bytes(source[i]["inputs"][source[i]["weights"] > 0].astype(np.uint8)) for i in range(12)}
  assert b"record 0:" in texts  # a short record: padding carries no loss weight
  batch = next(make_iterator(make_batches(source, global_batch_size=4, seed=0)))
  assert batch["inputs"].shape == (4, 16)
  with pytest.raises(ValueError, match="cannot open TFDS dataset"):
    TfdsTextSource("tiny_text", split="test", seq_len=16, data_dir=str(tmp_path))
