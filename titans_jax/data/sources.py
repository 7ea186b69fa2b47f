"""Random-access token sources for Grain: each record is one training example.

An example is a dict of numpy arrays of one fixed length L:
  inputs [L] int32, targets [L] int32 (inputs shifted by one), weights [L] float32
  (1 where the loss counts). Byte-level tokens: a byte is a token (vocab 256).
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

import numpy as np

BYTE_VOCAB_SIZE = 256


def example_from_tokens(tokens: np.ndarray, weights: np.ndarray | None = None) -> dict:
  """[L + 1] tokens -> next-token example of length L."""
  tokens = np.asarray(tokens, np.int32)
  length = tokens.shape[0] - 1
  if weights is None:
    weights = np.ones((length,), np.float32)
  return {"inputs": tokens[:-1], "targets": tokens[1:], "weights": np.asarray(weights, np.float32)}


class RandomTokenSource:
  """Uniform random tokens, a pure function of (seed, index): for smoke runs and benchmarks."""

  def __init__(self, *, vocab_size: int, seq_len: int, num_records: int = 1 << 30, seed: int = 0):
    if vocab_size < 2 or seq_len < 1:
      raise ValueError(f"RandomTokenSource needs vocab_size >= 2 and seq_len >= 1, got "
                       f"vocab_size={vocab_size}, seq_len={seq_len}")
    self.vocab_size, self.seq_len, self.num_records, self.seed = vocab_size, seq_len, num_records, seed

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict:
    rng = np.random.default_rng([self.seed, int(index)])
    return example_from_tokens(rng.integers(0, self.vocab_size, self.seq_len + 1))


def _expand_paths(patterns: str | Sequence[str]) -> list[str]:
  if isinstance(patterns, str):
    patterns = [p for p in patterns.split(",") if p]
  paths = []
  for pattern in patterns:
    matches = sorted(glob.glob(os.path.expanduser(pattern)))
    if not matches:
      raise ValueError(f"data path {pattern!r} matches no readable file; expected a file, a glob "
                       "(e.g. 'corpus/*.txt') or a comma-separated list of them")
    paths.extend(matches)
  return paths


class ByteTextSource:
  """Local text files as one byte stream, cut into windows of seq_len + 1 bytes."""

  def __init__(self, paths: str | Sequence[str], *, seq_len: int):
    self.paths = _expand_paths(paths)
    chunks = []
    for path in self.paths:
      try:
        with open(path, "rb") as handle:
          chunks.append(np.frombuffer(handle.read(), np.uint8))
      except OSError as error:
        raise ValueError(f"cannot read data file {path!r}: {error.strerror}") from None
    self.data = np.concatenate(chunks) if chunks else np.zeros((0,), np.uint8)
    self.seq_len = seq_len
    self.num_records = (self.data.shape[0] - 1) // seq_len
    if self.num_records < 1:
      raise ValueError(f"text files {self.paths} hold {self.data.shape[0]} bytes; expected at least "
                       f"seq_len + 1 = {seq_len + 1} bytes for one example")

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict:
    start = int(index) * self.seq_len
    return example_from_tokens(self.data[start:start + self.seq_len + 1])


class TfdsTextSource:
  """A TFDS text dataset through `tfds.data_source` (ArrayRecord random access).

  Each record's text field becomes byte tokens, cut or zero-padded to seq_len + 1;
  padding carries zero loss weight.
  """

  def __init__(self, name: str, *, split: str, seq_len: int, data_dir: str | None = None,
               text_key: str = "text"):
    import tensorflow_datasets as tfds  # imported lazily: heavy, and only this source needs it

    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as error:  # TFDS raises many types for a missing dataset
      raise ValueError(f"cannot open TFDS dataset {name!r} split {split!r} in data_dir={data_dir!r}: "
                       f"{error}. Build it first (tfds build, file_format=array_record) or fix the "
                       "name/data_dir") from None
    self.seq_len, self.text_key = seq_len, text_key
    if len(self.source) < 1:
      raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    record = self.source[int(index)]
    text = record[self.text_key]
    raw = text if isinstance(text, bytes) else str(text).encode("utf-8")
    tokens = np.frombuffer(raw[: self.seq_len + 1], np.uint8).astype(np.int32)
    weights = np.ones((self.seq_len,), np.float32)
    if tokens.shape[0] < self.seq_len + 1:
      weights[max(tokens.shape[0] - 1, 0):] = 0.0
      tokens = np.pad(tokens, (0, self.seq_len + 1 - tokens.shape[0]))
    return example_from_tokens(tokens, weights)
