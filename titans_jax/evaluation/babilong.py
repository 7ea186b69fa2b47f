"""BABILong accuracy by task and context length (the Titans paper's BABILong figures),
scored as BABILong's own evaluation scores it.

Each record's prompt (titans_jax/data/babilong.py: "plain" for fine-tuned models, the
default; "instruct" for BABILong's instruction prompt) is decoded greedily and the output
judged by BABILong's compare_answers: lowercase, keep the text before the first ".", find
the task's labels in it (labels the question mentions do not count) and require exactly
the target. Accuracy per task and length, and the qa1-qa5 average the paper plots.

    python -m titans_jax.evaluation.babilong --workdir=W --data_dir=/data/babilong \\
        --lengths=0k,1k,2k,4k,8k,16k --tasks=qa1,qa2,qa3,qa4,qa5 --samples=100

--data_dir holds <length>/<task>.jsonl (the hub's RMT-team/babilong config / split as JSON
lines); --fetch writes missing files there with Hugging Face `datasets` first. The
fine-tuning data of experiments/babilong_mac.py (RMT-team/babilong-train-5k-samples, the
same layout) is written the same way, with no checkpoint needed:

    python -m titans_jax.evaluation.babilong --fetch_only --hub_dataset=train \\
        --data_dir=/data/babilong-train-5k-samples --lengths=0k,1k --tasks=qa1,qa2,qa3,qa4,qa5

--hub_root reads the hub repositories from a local copy (<hub_root>/RMT-team/babilong).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np

from titans_jax.data import babilong as data
from titans_jax.data.tokenizers import Tokenizer, load_tokenizer
from titans_jax.evaluation.ruler import (PiecewiseDecoder, check_vocabulary, encode_prompt,
                                         greedy_text)
from titans_jax.evaluation import hub

HUB_DATASET = "RMT-team/babilong"  # test: config = length, split = task
HUB_TRAIN_DATASET = "RMT-team/babilong-train-5k-samples"  # fine-tuning, the same layout
HUB_DATASETS = {"test": HUB_DATASET, "train": HUB_TRAIN_DATASET}
AVERAGED = ("qa1", "qa2", "qa3", "qa4", "qa5")
# Bytes generated per prompt: " kitchen." after "Answer:"; the instruct format's answers
# are sentences ("The most recent location of Mary is kitchen.").
DEFAULT_MAX_NEW_TOKENS = {"plain": 16, "instruct": 64}


def preprocess_output(output: str) -> str:
  """BABILong's preprocess_output: lowercase, text before the first '.', then before any
  '<context>' / '<example>' the model started to write. (BABILong also splits at
  'Question', after lowercasing, so it never matches; kept as it is.)"""
  output = output.lower().split(".")[0]
  for marker in ("<context>", "<example>", "Question"):
    output = output.split(marker)[0]
  return output


def compare_answers(target: str, output: str, question: str, labels) -> bool:
  """BABILong's compare_answers: the labels found in the output, less those the question
  names, must be exactly the target (or, for 'a,b' targets, exactly its parts)."""
  output = preprocess_output(output)
  target = target.lower()
  labels = {label.lower() for label in labels}
  in_question = {label for label in labels if label in question.lower()}
  found = {label for label in labels if label in output} - in_question
  if "," in target and len(target) > 3:  # several objects (qa8)
    parts = target.split(",")
    return all(part in found for part in parts) and len(found) == len(parts)
  return target in found and len(found) == 1


@dataclasses.dataclass
class BabilongResult:
  name: str
  lengths: list
  tasks: list
  prompt: str
  accuracy: dict  # {length: {task: percent}}
  average: dict  # {length: mean percent over the qa1-qa5 run, or None}
  counts: dict  # {length: {task: samples scored}}
  records: list  # one dict per sample: length, task, index, target, output, correct
  seconds: float

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def load_hub_records(length: str, task: str, limit: int | None = None, *,
                     dataset: str = HUB_DATASET, hub_root: str = "") -> list[dict]:
  """One (length, task) of a BABILong hub dataset through Hugging Face `datasets`."""
  rows = hub.load_split(dataset, length, task, limit=limit, hub_root=hub_root,
                        local_hint="<data_dir>/<length>/<task>.jsonl")
  return [{field: row[field] for field in data.FIELDS} for row in rows]


def fetch(data_dir: str, lengths, tasks, limit: int | None = None, *,
          dataset: str = HUB_DATASET, hub_root: str = "") -> list[str]:
  """Writes every missing <data_dir>/<length>/<task>.jsonl from the hub dataset; returns them."""
  written = []
  for length in lengths:
    for task in tasks:
      path = data.task_file(data_dir, length, task)
      if not os.path.exists(path):
        hub.save_jsonl(load_hub_records(length, task, limit, dataset=dataset, hub_root=hub_root),
                   path)
        written.append(path)
  return written


def _load_cells(source, lengths, tasks, samples) -> dict:
  """{(length, task): records}: from a folder, or from a dict of the same keys."""
  cells = {}
  for length in lengths:
    for task in tasks:
      if isinstance(source, dict):
        if (length, task) not in source:
          raise ValueError(f"no records for BABILong ({length!r}, {task!r}); the dict has "
                           f"{sorted(source)}")
        records = list(source[length, task])[:samples]
      else:
        records = data.read_records(data.task_file(source, length, task), samples)
      if not records:
        raise ValueError(f"BABILong {length}/{task} has no records; expected at least one")
      cells[length, task] = records
  return cells


def evaluate_babilong(model, tokenizer: Tokenizer, source, *, lengths=("0k",),
                      tasks=data.DEFAULT_TASKS, samples: int | None = None, prompt: str = "plain",
                      max_new_tokens: int | None = None, piece_len: int = 256,
                      name: str = "model", progress: bool = True) -> BabilongResult:
  """Accuracy of `model` (a zoo LM) on BABILong, greedy decoding.

  source: a folder of <length>/<task>.jsonl, or {(length, task): [records]}.
  samples: the first N records of each (length, task) (None: all).
  """
  tasks = [data.canonical_task(task) for task in data.parse_names(tasks, "tasks")]
  lengths = data.parse_names(lengths, "lengths")
  data.check_prompt_format(prompt, tasks)
  if samples is not None and int(samples) < 1:
    raise ValueError(f"samples={samples}; expected >= 1 record per task and length (or None)")
  new_tokens = DEFAULT_MAX_NEW_TOKENS[prompt] if max_new_tokens is None else int(max_new_tokens)
  if new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens}; expected >= 1")
  check_vocabulary(model, tokenizer)
  cells = _load_cells(source, lengths, tasks, samples)  # file problems surface before compiling
  decoder = PiecewiseDecoder(model, piece_len)
  started = time.time()
  accuracy, counts, records = {n: {} for n in lengths}, {n: {} for n in lengths}, []
  for (length, task), cell in cells.items():
    correct = []
    for index, record in enumerate(cell):
      tokens = encode_prompt(tokenizer, data.format_prompt(record, task, prompt))
      output = greedy_text(model, tokenizer, tokens, new_tokens, decoder)
      correct.append(compare_answers(str(record["target"]), output, str(record["question"]),
                                     data.TASK_LABELS[task]))
      records.append({"length": length, "task": task, "index": index,
                      "target": str(record["target"]), "output": output, "correct": correct[-1],
                      "prompt_tokens": len(tokens)})
    accuracy[length][task] = 100.0 * float(np.mean(correct))
    counts[length][task] = len(cell)
    if progress:
      print(f"  babilong {length} {task}: {accuracy[length][task]:.1f}% ({len(cell)} samples, "
            f"{time.time() - started:.0f}s)", file=sys.stderr, flush=True)
  averaged = [task for task in tasks if task in AVERAGED]
  average = {n: (float(np.mean([accuracy[n][t] for t in averaged])) if averaged else None)
             for n in lengths}
  return BabilongResult(name=name, lengths=lengths, tasks=tasks, prompt=prompt, accuracy=accuracy,
                        average=average, counts=counts, records=records,
                        seconds=time.time() - started)


def format_table(result: BabilongResult) -> str:
  """A row per length, a column per task, and the qa1-qa5 average (of those run)."""
  averaged = [task for task in result.tasks if task in AVERAGED]
  average_header = "qa1-5" if len(averaged) == len(AVERAGED) else "avg(" + ",".join(averaged) + ")"
  columns = list(result.tasks) + ([average_header] if averaged else [])
  widths = [max(6, len(column)) for column in columns]
  header = f"{'length':>8} | " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
  lines = [f"{result.name}: BABILong accuracy (%), {result.prompt} prompt", header,
           "-" * len(header)]
  for length in result.lengths:
    values = [result.accuracy[length][task] for task in result.tasks]
    values += [result.average[length]] if averaged else []
    lines.append(f"{length:>8} | " + " ".join(f"{v:>{w}.1f}" for v, w in zip(values, widths)))
  return "\n".join(lines)


def main(argv=None):
  import argparse

  from titans_jax import train

  parser = argparse.ArgumentParser(description="BABILong accuracy of a workdir's checkpoint.")
  parser.add_argument("--workdir", default="", help="the --workdir of a training run")
  parser.add_argument("--data_dir", required=True, help="folder of <length>/<task>.jsonl files")
  parser.add_argument("--lengths", default="0k,1k,2k,4k", help="comma-separated length names")
  parser.add_argument("--tasks", default=",".join(data.DEFAULT_TASKS), help="qa1 .. qa20")
  parser.add_argument("--samples", type=int, default=None, help="first N records of each file "
                      "(default: all)")
  parser.add_argument("--prompt", default="", help="plain | instruct (default: the run's "
                      "data.babilong_prompt, else plain)")
  parser.add_argument("--tokenizer", default="", help="byte | sentencepiece:PATH | hf:PATH | PATH "
                      "(default: the run's data.tokenizer, else byte)")
  parser.add_argument("--max_new_tokens", type=int, default=0,
                      help="tokens to generate (default: 16 plain, 64 instruct)")
  parser.add_argument("--piece_len", type=int, default=0,
                      help="prefill piece length (default: the run's data.seq_len)")
  parser.add_argument("--fetch", action="store_true", help="download missing files with Hugging "
                      "Face `datasets` into --data_dir first")
  parser.add_argument("--fetch_only", action="store_true", help="--fetch, then stop (no "
                      "checkpoint, no --workdir): e.g. the fine-tuning data")
  parser.add_argument("--hub_dataset", default="test", help=f"what --fetch reads: test "
                      f"({HUB_DATASET}), train ({HUB_TRAIN_DATASET}) or a repository id")
  parser.add_argument("--hub_root", default="", help="read --hub_dataset from this local folder "
                      "(<hub_root>/<repo id>) instead of the network")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--out", default="", help="JSON path (default: WORKDIR/babilong.json)")
  args = parser.parse_args(argv)
  try:  # bad names and missing files fail before the checkpoint loads
    tasks = [data.canonical_task(t) for t in data.parse_names(args.tasks, "tasks")]
    lengths = data.parse_names(args.lengths, "lengths")
    if not (args.workdir or args.fetch_only):
      raise ValueError("--workdir is required (the run to evaluate), unless --fetch_only")
    if args.fetch or args.fetch_only:
      written = fetch(args.data_dir, lengths, tasks, dataset=HUB_DATASETS.get(
          args.hub_dataset, args.hub_dataset), hub_root=args.hub_root)
      if args.fetch_only:
        print(f"Fetched {len(written)} file(s) into {args.data_dir}")
        return
    for length in lengths:
      for task in tasks:
        if not os.path.isfile(data.task_file(args.data_dir, length, task)):
          raise ValueError(f"{data.task_file(args.data_dir, length, task)} does not exist; "
                           "expected <data_dir>/<length>/<task>.jsonl (or pass --fetch)")
  except ValueError as error:
    parser.error(str(error))
  model, config, step = train.load_model(args.workdir, args.step)
  prompt = args.prompt or (config.data.get("babilong_prompt", "plain")
                           if config.data.get("source") == "babilong" else "plain")
  tokenizer_spec = args.tokenizer or config.data.get("tokenizer", "") or "byte"
  result = evaluate_babilong(model, load_tokenizer(tokenizer_spec), args.data_dir, lengths=lengths,
                             tasks=tasks, samples=args.samples, prompt=prompt,
                             max_new_tokens=args.max_new_tokens or None,
                             piece_len=args.piece_len or int(config.data.seq_len),
                             name=f"{config.model.variant}@{step}")
  print(format_table(result))
  out = args.out or os.path.join(args.workdir, "babilong.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as handle:
    json.dump({"workdir": args.workdir, "step": step, "tokenizer": tokenizer_spec,
               **result.to_json(), "table": format_table(result)}, handle, indent=2)
  print(f"Results: {out}")


if __name__ == "__main__":
  main()
