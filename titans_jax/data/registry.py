"""Builds the Grain source named by an experiment's `data` config section."""

from __future__ import annotations

from titans_jax.data.sources import BYTE_VOCAB_SIZE, ByteTextSource, RandomTokenSource, TfdsTextSource

SOURCES = ("random", "text", "tfds")


def make_source(data_config, *, split: str, vocab_size: int):
  """split: "train" or "eval". Raises ValueError for unknown or unreadable data."""
  kind = data_config.source
  seq_len = int(data_config.seq_len)
  if seq_len < 1:
    raise ValueError(f"data.seq_len must be >= 1, got {seq_len}")
  if kind == "random":
    seed = int(data_config.seed) + (0 if split == "train" else 1_000_003)
    return RandomTokenSource(vocab_size=vocab_size, seq_len=seq_len, seed=seed)
  if kind in ("text", "tfds") and vocab_size < BYTE_VOCAB_SIZE:
    raise ValueError(f"data.source={kind!r} gives byte tokens (0..255) but model.vocab_size is "
                     f"{vocab_size}; expected model.vocab_size >= {BYTE_VOCAB_SIZE}")
  if kind == "text":
    paths = data_config.train_path if split == "train" else (data_config.eval_path or
                                                              data_config.train_path)
    if not paths:
      raise ValueError("data.source='text' needs data.train_path (a file, glob or "
                       "comma-separated list of text files)")
    return ByteTextSource(paths, seq_len=seq_len)
  if kind == "tfds":
    name_split = data_config.train_split if split == "train" else data_config.eval_split
    return TfdsTextSource(data_config.tfds_name, split=name_split, seq_len=seq_len,
                          data_dir=data_config.tfds_data_dir or None,
                          text_key=data_config.text_key)
  raise ValueError(f"data.source={kind!r} is unknown; expected one of {SOURCES}")
