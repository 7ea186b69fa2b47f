"""Needle-in-a-haystack accuracy by context length x needle depth, for any model.

A sample counts as recalled when the model, fed the haystack, the question and the
answer, predicts every answer token (argmax) from the tokens before it: exactly when
greedy decoding would write the whole answer. Contexts are streamed through the model
in pieces with its state carried, so memory use stays bounded however long they get.

    python -m titans_jax.evaluation.recall --workdir=/tmp/titans_quickstart \\
        --lengths=256,1024,4096 --depths=0,0.25,0.5,0.75,1
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

from titans_jax.data.tasks import NeedleInHaystackSource

EVAL_SEED_OFFSET = 7_777_777  # evaluation needles never coincide with training ones


@dataclasses.dataclass
class RecallResult:
  task: str
  haystack: str
  lengths: list
  depths: list
  accuracy: list  # [len(lengths)][len(depths)]: fraction of samples recalled exactly
  token_accuracy: list  # same layout: fraction of answer tokens predicted
  samples: int
  seconds: float

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _stream_function(model):
  """One piece of the stream: jitted (position-agnostic variants) or eager (MAC, whose
  segment bookkeeping needs Python-int positions for pieces longer than one token)."""
  if getattr(model.config, "variant", None) == "mac":
    return lambda x, cache: model.stream(x, cache)
  step = nnx.jit(lambda model, x, cache: model.stream(x, cache))
  return lambda x, cache: step(model, x, cache)


def _predict_answers(stream, model, inputs, targets, weights, piece_len: int):
  """Streams [S, L] inputs in pieces; returns per-sample (all correct, tokens correct, tokens)."""
  batch, length = inputs.shape
  cache = model.init_cache(batch)
  correct = np.zeros((batch,), np.int64)
  for start in range(0, length, piece_len):
    end = min(start + piece_len, length)
    piece_weights = weights[:, start:end]
    logits, cache = stream(jnp.asarray(inputs[:, start:end]), cache)
    if piece_weights.any():  # only pieces holding answer tokens need the argmax on the host
      predicted = np.asarray(jnp.argmax(logits, axis=-1))
      correct += ((predicted == targets[:, start:end]) & (piece_weights > 0)).sum(axis=1)
  total = (weights > 0).sum(axis=1)
  return correct == total, correct, total


def evaluate_recall(model, *, lengths, depths, samples: int = 8, task: str = "passkey",
                    haystack: str = "noise", piece_len: int = 256, seed: int = 0,
                    progress: bool = True) -> RecallResult:
  """Accuracy of `model` (a zoo LM with init_cache/stream) on S-NIAH samples."""
  lengths, depths = [int(n) for n in lengths], [float(d) for d in depths]
  minimum = NeedleInHaystackSource.min_seq_len(task)
  for length in lengths:
    if length < minimum:
      raise ValueError(f"context length {length} cannot hold a {task!r} needle, question and "
                       f"answer; expected lengths >= {minimum}")
  for depth in depths:
    if not 0.0 <= depth <= 1.0:
      raise ValueError(f"needle depth {depth} is outside [0, 1]")
  if samples < 1 or piece_len < 1:
    raise ValueError(f"samples={samples} and piece_len={piece_len} must be >= 1")
  stream = _stream_function(model)
  started = time.time()
  accuracy, token_accuracy = [], []
  for row, length in enumerate(lengths):
    accuracy.append([])
    token_accuracy.append([])
    for depth in depths:
      source = NeedleInHaystackSource(seq_len=length, task=task, haystack=haystack, depth=depth,
                                      seed=seed + EVAL_SEED_OFFSET)
      examples = [source[index] for index in range(samples)]
      stack = lambda key: np.stack([example[key] for example in examples])
      exact, correct, total = _predict_answers(stream, model, stack("inputs"), stack("targets"),
                                               stack("weights"), piece_len)
      accuracy[-1].append(float(exact.mean()))
      token_accuracy[-1].append(float(correct.sum() / max(total.sum(), 1)))
    if progress:  # a bar by tokens streamed: the long contexts are most of the work
      fraction = sum(lengths[:row + 1]) / sum(lengths)
      elapsed = time.time() - started
      bar = "#" * int(24 * fraction) + "." * (24 - int(24 * fraction))
      cells = "  ".join(f"{100 * a:5.1f}%" for a in accuracy[-1])
      print(f"[{bar}] recall length {length:>7} ({row + 1}/{len(lengths)}): {cells}  "
            f"left {elapsed * (1 - fraction) / fraction:.0f}s", file=sys.stderr, flush=True)
  return RecallResult(task=task, haystack=haystack, lengths=lengths, depths=depths,
                      accuracy=accuracy, token_accuracy=token_accuracy, samples=samples,
                      seconds=time.time() - started)


def format_table(result: RecallResult, title: str = "") -> str:
  header = f"{'length':>8} | " + " ".join(f"{'depth ' + format(d, '.2f'):>10}" for d in result.depths)
  header += f" | {'mean':>6}"
  lines = [title or f"S-NIAH {result.task} ({result.haystack} haystack), exact-answer accuracy, "
           f"{result.samples} samples per cell", header, "-" * len(header)]
  for length, row in zip(result.lengths, result.accuracy):
    cells = " ".join(f"{100 * a:>9.1f}%" for a in row)
    lines.append(f"{length:>8} | {cells} | {100 * np.mean(row):>5.1f}%")
  return "\n".join(lines)


def save_heatmap(result: RecallResult, path: str, title: str = "") -> str:
  """RULER / Titans-style heatmap: context length (x) by needle depth (y), accuracy in colour."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  values = np.asarray(result.accuracy, np.float64).T * 100  # [depth, length]
  figure, axes = plt.subplots(figsize=(1.2 + 1.1 * len(result.lengths), 1.0 + 0.6 * len(result.depths)))
  image = axes.imshow(values, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
  axes.set_xticks(range(len(result.lengths)), [str(n) for n in result.lengths])
  axes.set_yticks(range(len(result.depths)), [f"{100 * d:.0f}%" for d in result.depths])
  axes.set_xlabel("context length (tokens)")
  axes.set_ylabel("needle depth")
  for (row, column), value in np.ndenumerate(values):
    axes.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=8)
  axes.set_title(title or f"S-NIAH {result.task}: accuracy (%)", fontsize=10)
  figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return path


def write_report(result: RecallResult, out_dir: str, name: str = "recall", title: str = "") -> dict:
  """Table on the console, JSON and PNG in out_dir; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  table = format_table(result, title)
  print(table, flush=True)
  json_path = os.path.join(out_dir, f"{name}.json")
  with open(json_path, "w") as handle:
    json.dump(result.to_json(), handle, indent=2)
  png_path = save_heatmap(result, os.path.join(out_dir, f"{name}.png"), title)
  return {"table": table, "json": json_path, "png": png_path}


def _parse_list(text: str, kind):
  return [kind(item) for item in text.split(",") if item.strip()]


def main(argv=None):
  import argparse

  from titans_jax import train

  parser = argparse.ArgumentParser(description="S-NIAH accuracy of a trained workdir's checkpoint.")
  parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
  parser.add_argument("--lengths", default="", help="context lengths, comma-separated "
                      "(default: 1x, 4x, 16x the training length)")
  parser.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="needle depths in [0, 1]")
  parser.add_argument("--samples", type=int, default=8, help="samples per cell")
  parser.add_argument("--task", default="", help="passkey | number | uuid (default: as trained)")
  parser.add_argument("--haystack", default="", help="noise | essay (default: as trained)")
  parser.add_argument("--out", default="", help="output folder (default: WORKDIR/recall)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  args = parser.parse_args(argv)
  model, config, step = train.load_model(args.workdir, args.step)
  seq_len = int(config.data.seq_len)
  lengths = _parse_list(args.lengths, int) or [seq_len, 4 * seq_len, 16 * seq_len]
  result = evaluate_recall(model, lengths=lengths, depths=_parse_list(args.depths, float),
                           samples=args.samples, task=args.task or config.data.get("task", "passkey"),
                           haystack=args.haystack or config.data.get("haystack", "noise"),
                           piece_len=seq_len, seed=int(config.seed))
  paths = write_report(result, args.out or os.path.join(args.workdir, "recall"),
                       title=f"{config.model.variant} step {step}: S-NIAH {result.task} accuracy (%)")
  print(f"Table: {paths['json']}\nHeatmap: {paths['png']}")


if __name__ == "__main__":
  main()
