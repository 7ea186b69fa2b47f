"""Documents -> fixed-length training rows, and the ArrayRecord shards that hold them.

Packing: documents are tokenized, wrapped as [BOS] doc [EOS] (either marker optional)
and concatenated into one stream, cut into rows of seq_len + 1 tokens that overlap by
one (row i's last token is row i + 1's first), so every token is a target exactly once.
Document boundaries stay in the stream as the BOS / EOS tokens; each row also carries
the document index of every token (`segments`), for models that reset at boundaries.

    rows = pack_documents(token_lists, seq_len=2048, bos_id=1, eos_id=2)
    write_shards(rows, "corpus/train", seq_len=2048, num_shards=8, metadata={...})
    source = PackedSource("corpus/train-*.array_record", seq_len=2048)   # a Grain source
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Iterable, Iterator

import numpy as np

from titans_jax.data.sources import example_from_tokens

ROW_DTYPE = np.int32
METADATA = "packing.json"


def pack_documents(documents: Iterable[list[int]], *, seq_len: int, bos_id: int | None = None,
                   eos_id: int | None = None, drop_remainder: bool = True,
                   align: int = 1) -> Iterator[dict]:
  """Yields {"tokens": [seq_len + 1] int32, "segments": [seq_len + 1] int32} rows.

  segments numbers the documents from 0 in the order given; a row that starts inside a
  document continues its number. The last partial row is dropped (drop_remainder) or
  padded with EOS (or 0) under segment -1. align > 1 starts every document at a row
  position that is a multiple of it (padding before it, segment -1): the memory's chunk
  size (and MAC's segment length), so that a model resetting at documents reads each
  one exactly as it would alone.
  """
  if seq_len < 1:
    raise ValueError(f"seq_len={seq_len}; expected >= 1")
  if align < 1 or seq_len % align:
    raise ValueError(f"align={align} must be >= 1 and divide seq_len={seq_len} (documents start "
                     "at multiples of it in every row); e.g. the memory chunk size")
  width = seq_len + 1
  tokens, segments = [], []
  total = 0  # tokens of the whole stream so far (rows start at multiples of seq_len in it)
  for number, document in enumerate(documents):
    wrapped = ([bos_id] if bos_id is not None else []) + list(document) + (
        [eos_id] if eos_id is not None else [])
    pad = -total % align
    tokens.extend([eos_id or 0] * pad)
    segments.extend([-1] * pad)
    total += pad + len(wrapped)
    tokens.extend(wrapped)
    segments.extend([number] * len(wrapped))
    while len(tokens) >= width:
      yield {"tokens": np.asarray(tokens[:width], ROW_DTYPE),
             "segments": np.asarray(segments[:width], ROW_DTYPE)}
      # Overlap by one: the last token of this row is the first input of the next.
      tokens, segments = tokens[seq_len:], segments[seq_len:]
  if len(tokens) > 1 and not drop_remainder:
    pad = width - len(tokens)
    yield {"tokens": np.asarray(tokens + [eos_id or 0] * pad, ROW_DTYPE),
           "segments": np.asarray(segments + [-1] * pad, ROW_DTYPE)}


def encode_row(row: dict) -> bytes:
  """One row as bytes: tokens then segments, int32 little-endian."""
  return np.concatenate([row["tokens"], row["segments"]]).astype("<i4").tobytes()


def decode_row(record: bytes, seq_len: int) -> dict:
  values = np.frombuffer(record, "<i4")
  if values.shape[0] != 2 * (seq_len + 1):
    raise ValueError(f"a packed record holds {values.shape[0] // 2 - 1} tokens per row; this "
                     f"source expects seq_len={seq_len}. Read the shards with the seq_len they "
                     "were packed with (their packing.json says it)")
  return {"tokens": values[:seq_len + 1].astype(ROW_DTYPE),
          "segments": values[seq_len + 1:].astype(ROW_DTYPE)}


def write_shards(rows: Iterable[dict], prefix: str, *, seq_len: int, num_shards: int = 1,
                 metadata: dict | None = None) -> dict:
  """Writes rows round-robin into `prefix`-NNNNN-of-MMMMM.array_record shards and a
  packing.json next to them; returns the metadata (with num_records)."""
  from array_record.python.array_record_module import ArrayRecordWriter

  if num_shards < 1:
    raise ValueError(f"num_shards={num_shards}; expected >= 1")
  directory = os.path.dirname(os.path.abspath(prefix))
  os.makedirs(directory, exist_ok=True)
  paths = [f"{prefix}-{index:05d}-of-{num_shards:05d}.array_record" for index in range(num_shards)]
  # group_size:1 keeps every record individually addressable (Grain reads at random).
  writers = [ArrayRecordWriter(path, "group_size:1") for path in paths]
  count = 0
  try:
    for row in rows:
      if row["tokens"].shape != (seq_len + 1,):
        raise ValueError(f"row {count} has {row['tokens'].shape[0]} tokens; expected seq_len + 1 = "
                         f"{seq_len + 1}")
      writers[count % num_shards].write(encode_row(row))
      count += 1
    if count == 0:
      raise ValueError(f"no row of seq_len + 1 = {seq_len + 1} tokens could be packed; expected "
                       "more text or a shorter seq_len")
  except BaseException:
    for writer in writers:
      writer.close()
    for path in paths:  # no half-written shards left behind to be trained on
      os.remove(path)
    raise
  for writer in writers:
    writer.close()
  info = dict(metadata or {}, seq_len=seq_len, num_records=count, num_shards=num_shards,
              shards=[os.path.basename(path) for path in paths], format="tokens+segments int32")
  with open(os.path.join(directory, f"{os.path.basename(prefix)}.{METADATA}"), "w") as handle:
    json.dump(info, handle, indent=2)
  return info


class PackedSource:
  """Packed ArrayRecord shards as a Grain random-access source of training examples.

  Each example: inputs / targets / weights as every source gives; `segments(index)`
  gives the document of each input token."""

  def __init__(self, pattern: str, *, seq_len: int, with_segments: bool = False):
    """with_segments: examples also hold "segments" [seq_len], each input's document."""
    import grain

    paths = sorted(path for part in pattern.split(",") if part
                   for path in glob.glob(os.path.expanduser(part)))
    if not paths:
      raise ValueError(f"data path {pattern!r} matches no .array_record shard; expected the "
                       "prefix the pretokenize tool wrote (e.g. 'corpus/train-*.array_record')")
    self.seq_len = int(seq_len)
    self.with_segments = with_segments
    self.source = grain.sources.ArrayRecordDataSource(paths)
    if len(self.source) < 1:
      raise ValueError(f"shards {paths} hold no records")
    decode_row(self.source[0], self.seq_len)  # a wrong seq_len fails here, not mid-training
    self.metadata = {}
    prefix = re.sub(r"-\d{5}-of-\d{5}\.array_record$", "", paths[0])
    if os.path.exists(f"{prefix}.{METADATA}"):
      with open(f"{prefix}.{METADATA}") as handle:
        self.metadata = json.load(handle)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    row = decode_row(self.source[int(index)], self.seq_len)
    example = example_from_tokens(row["tokens"])
    example["weights"] = (row["segments"][1:] >= 0).astype(np.float32)  # no loss on padding
    if self.with_segments:
      example["segments"] = row["segments"][:-1]
    return example

  def segments(self, index: int) -> np.ndarray:
    """[seq_len] document number of each input token of example `index` (-1: padding)."""
    return decode_row(self.source[int(index)], self.seq_len)["segments"][:-1]
