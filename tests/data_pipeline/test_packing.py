"""Packing and pretokenized shards: every token is a target once, documents keep their
boundaries and order, the shards read back as a Grain source, and mistakes are caught."""

import json

import numpy as np
import pytest

from titans_jax.data import packing
from titans_jax.data.registry import make_source
from titans_jax.tools import pretokenize


def test_packed_rows_overlap_by_one_and_keep_document_boundaries():
  # Given three documents and markers BOS=100, EOS=101
  documents = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
  rows = list(packing.pack_documents(documents, seq_len=4, bos_id=100, eos_id=101,
                                     drop_remainder=False))
  # Then the rows, joined without their one-token overlaps, are the wrapped stream
  stream = [100, 1, 2, 3, 101, 100, 4, 5, 101, 100, 6, 7, 8, 9, 101]
  joined = np.concatenate([rows[0]["tokens"]] + [row["tokens"][1:] for row in rows[1:]])
  np.testing.assert_array_equal(joined[:len(stream)], stream)
  assert all(row["tokens"].shape == (5,) for row in rows)
  # and segments number each token's document (-1 for the padding of the last row)
  segments = np.concatenate([rows[0]["segments"]] + [row["segments"][1:] for row in rows[1:]])
  np.testing.assert_array_equal(segments[:len(stream)], [0] * 5 + [1] * 4 + [2] * 6)
  assert (segments[len(stream):] == -1).all()


def test_pretokenized_shards_read_back_through_the_registry(tmp_path):
  # Given a jsonl corpus pretokenized into two shards of byte rows with a NUL end marker
  corpus = tmp_path / "corpus.jsonl"
  texts = [f"document number {i}: " + "abc " * i for i in range(12)]
  corpus.write_text("".join(json.dumps({"body": text}) + "\n" for text in texts))
  info = pretokenize.main([f"--inputs={corpus}", f"--out={tmp_path / 'shards' / 'train'}",
                           "--seq_len=32", "--text_key=body", "--eos_id=0", "--num_shards=2"])
  # When the registry opens them as data.source="packed"
  config = type("Data", (), dict(source="packed", seq_len=32, train_path=str(
      tmp_path / "shards" / "train-*.array_record"), eval_path="", seed=0))
  source = make_source(config, split="train", vocab_size=256)
  # Then every row is there, and the rows (shard-interleaved) rebuild the documents in order
  assert len(source) == info["num_records"] > 2
  rows = [source[i] for i in range(len(source))]
  for example in rows:
    np.testing.assert_array_equal(example["inputs"][1:], example["targets"][:-1])
    assert example["inputs"].shape == (32,) and example["weights"].min() == 1.0
  # Rows went round-robin to the shards (0, 2, 4, ... then 1, 3, ...); undo that.
  first_shard = (len(rows) + 1) // 2
  packed_order = [None] * len(rows)
  for index, example in enumerate(rows):
    packed_order[2 * index if index < first_shard else 2 * (index - first_shard) + 1] = example
  stream = bytes(np.concatenate([example["inputs"] for example in packed_order]).astype(np.uint8))
  expected = b"".join(text.encode() + b"\0" for text in texts)
  assert stream == expected[:len(stream)] and len(stream) > len(expected) - 33
  assert source.segments(0)[0] == 0


def test_packing_mistakes_are_clear(tmp_path):
  with pytest.raises(ValueError, match="no row of seq_len"):
    packing.write_shards(packing.pack_documents([[1, 2]], seq_len=8), str(tmp_path / "x"), seq_len=8)
  rows = packing.pack_documents([list(range(40))], seq_len=8)
  packing.write_shards(rows, str(tmp_path / "y"), seq_len=8, metadata={"vocab_size": 300})
  with pytest.raises(ValueError, match="expects seq_len=16"):
    packing.PackedSource(str(tmp_path / "y-*.array_record"), seq_len=16)
  config = type("Data", (), dict(source="packed", seq_len=8, train_path=str(tmp_path / "y-*"),
                                 eval_path="", seed=0))
  with pytest.raises(ValueError, match="expected model.vocab_size >= 300"):
    make_source(config, split="train", vocab_size=256)
  with pytest.raises(ValueError, match="matches no .array_record shard"):
    packing.PackedSource(str(tmp_path / "missing-*"), seq_len=8)


def test_aligned_packing_starts_documents_on_the_grid():
  documents = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
  rows = list(packing.pack_documents(documents, seq_len=8, bos_id=100, align=4,
                                     drop_remainder=False))
  segments = np.concatenate([rows[0]["segments"]] + [row["segments"][1:] for row in rows[1:]])
  tokens = np.concatenate([rows[0]["tokens"]] + [row["tokens"][1:] for row in rows[1:]])
  starts = [int(np.argmax(segments == number)) for number in range(3)]
  assert starts == [0, 4, 8]  # each on a multiple of 4, padding (segment -1) before it
  assert tokens[7] == 0 and segments[7] == -1  # document 1 has 3 tokens: one pad
  np.testing.assert_array_equal(tokens[8:14], [100, 6, 7, 8, 9, 10])
  with pytest.raises(ValueError, match="divide seq_len"):
    list(packing.pack_documents(documents, seq_len=10, align=4))


def test_training_resets_at_documents_end_to_end(tmp_path):
  # Given aligned packed shards and a tiny MAG that resets at every document
  from titans_jax import configs, train

  corpus = tmp_path / "corpus.txt"
  corpus.write_text("".join(f"doc {i} " + "xy" * (i % 5) + "\n" for i in range(40)))
  pretokenize.main([f"--inputs={corpus}", f"--out={tmp_path / 'train'}", "--seq_len=16",
                    "--eos_id=10", "--align=4"])
  config = configs.base_config()
  config.model.update(variant="mag", vocab_size=256, width=16, num_layers=1, num_heads=2,
                      window=4, memory_chunk=4, num_persistent=2)
  config.data.update(source="packed", seq_len=16, reset_at_documents=True,
                     train_path=str(tmp_path / "train-*.array_record"))
  config.train.update(steps=2, global_batch_size=2, eval_every=2, eval_steps=1, log_every=1,
                      checkpoint_every=2)
  source = make_source(config.data, split="train", vocab_size=256)
  assert source[0]["segments"].shape == (16,)
  # Then training runs with the segments and a loss comes out
  result = train.train_and_evaluate(config, str(tmp_path / "work"))
  assert result.step == 2 and all(np.isfinite(row["loss"]) for row in result.history if "loss" in row)
  # A source without boundaries is refused before anything compiles
  config.data.source = "random"
  with pytest.raises(ValueError, match="only data.source='packed'"):
    train.train_and_evaluate(config, str(tmp_path / "work2"))
