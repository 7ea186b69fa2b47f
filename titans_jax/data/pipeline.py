"""Grain input pipeline: source -> shuffle -> batch (this process's rows) -> prefetch.

Global batch j holds records j * B .. (j + 1) * B - 1 of the shuffled, repeated
source; process p reads only its rows p * B / P .. (p + 1) * B / P - 1, so any
number of processes sees exactly the global batches of a single process. The
iterator state (the next batch index) is checkpointable.

Evaluation of a finite split (`one_pass=True`, Tables 3 and 4) reads every record
exactly once: ceil(N / B) global batches, the last one filled up with weight-0 rows
(`row_weight`), so every process still gets the same number of batches.
"""

from __future__ import annotations

import grain
import numpy as np


def _stack(examples):
  return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


def make_batches(source, *, global_batch_size: int, seed: int, shuffle: bool = True,
                 process_index: int = 0, process_count: int = 1,
                 one_pass: bool = False) -> grain.MapDataset:
  """MapDataset whose element j is this process's part of global batch j.

  Infinite (the source repeated) by default. one_pass=True: ceil(len(source) / B)
  batches that read each record once, each with `row_weight` [rows] float32: 1 for a
  record, 0 for the rows padding the last batch (copies of the split's first records,
  so a model sees real data there; train_step's losses give them no weight).
  """
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} does not divide over "
                     f"{process_count} processes; use a multiple of {process_count}")
  records = grain.MapDataset.source(source)
  if shuffle:
    records = records.shuffle(seed=seed)
  local = global_batch_size // process_count
  first_row = process_index * local
  if one_pass:
    count = len(records)
    if count < 1:
      raise ValueError("one_pass=True needs a source with at least one record; got an empty one")

    def padded_batch(index):
      rows = [index * global_batch_size + first_row + row for row in range(local)]
      batch = _stack([records[row % count] for row in rows])
      batch["row_weight"] = np.asarray([row < count for row in rows], np.float32)
      return batch

    return grain.MapDataset.range(0, -(-count // global_batch_size)).map(padded_batch)

  records = records.repeat(None)  # epochs reshuffle with a new seed each time

  def batch(index):
    start = index * global_batch_size + first_row
    return _stack([records[start + row] for row in range(local)])

  return grain.MapDataset.range(0, 1 << 40).map(batch)


def make_iterator(batches: grain.MapDataset, *, prefetch_threads: int = 2,
                  prefetch_buffer: int = 4):
  """A checkpointable iterator (get_state / set_state) with background prefetch."""
  options = grain.ReadOptions(num_threads=prefetch_threads, prefetch_buffer_size=prefetch_buffer)
  return iter(batches.to_iter_dataset(read_options=options))
