"""Hugging Face hub splits for the evaluation harnesses (zero-shot, BABILong), written as
local jsonl files: the one place that imports `datasets` and resolves --hub_root."""

from __future__ import annotations

import json
import os


def load_split(repo: str, config: str | None, split: str, *, limit: int | None = None,
               hub_root: str = "", local_hint: str) -> list[dict]:
  """Rows of (repo, config, split) through `datasets` (network or its cache).

  hub_root: a folder holding repositories under their hub ids (<hub_root>/allenai/ai2_arc,
  e.g. `huggingface-cli download --repo-type=dataset` copies): read there, not from the hub.
  local_hint: where the caller reads the split from when it is on disk (for the error).
  """
  try:
    import datasets
  except ImportError:
    raise ValueError(f"{repo} {config}/{split} has no local file and Hugging Face `datasets` is "
                     f"not installed; write it as {local_hint} or pip install datasets") from None
  path = os.path.join(hub_root, repo) if hub_root else repo
  if hub_root and not os.path.isdir(path):
    raise ValueError(f"--hub_root has no {path!r}; expected the hub repository {repo!r} "
                     "downloaded there")
  rows = datasets.load_dataset(path, config, split=split)
  if limit is not None:
    rows = rows.select(range(min(limit, len(rows))))
  return [dict(row) for row in rows]


def save_jsonl(docs, path: str) -> str:
  """Writes docs as jsonl whole or not at all (a temporary file renamed at the end): a
  fetch that fails midway leaves no partial file for the next run to take as fetched."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  partial = path + ".partial"
  try:
    with open(partial, "w", encoding="utf-8") as handle:
      for doc in docs:
        handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return path
