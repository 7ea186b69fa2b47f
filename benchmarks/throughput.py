"""Training throughput against sequence length (Titans Figure 9), one table.

  python benchmarks/throughput.py --config=experiments/f9_throughput.py          # CPU size
  python benchmarks/throughput.py --config=experiments/f9_throughput.py:size=170M
  python benchmarks/throughput.py --quick                                         # seconds

Each measurement (model x length) runs in its own subprocess, so compile caches and
peak resident memory are its own: the full jitted train step of titans_jax.train_step
(forward, backward, clipping, AdamW update) on random tokens, timed after one compile
step, median of `steps`. tokens/s = batch_size x length / median step seconds.
Settings come from the config file (an ml-collections config); --models, --lengths and
--steps override it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "experiments", "f9_throughput.py")
if ROOT not in sys.path:  # a script in the checkout: titans_jax and experiments/ import uninstalled
  sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import run_worker  # noqa: E402  (the benchmarks' shared subprocess runner)


def load_config(spec: str):
  """'path/to/config.py[:args]' -> its get_config(args), as titans_jax.main reads configs."""
  path, _, arguments = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config={spec!r}: {path!r} is not a file; expected e.g. "
                     "experiments/f9_throughput.py[:size=170M]")
  module_spec = importlib.util.spec_from_file_location("throughput_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arguments or None)


# ----------------------------------------------------------------------------- worker


def build_model_config(variant: str, size: str, model: dict):
  from titans_jax.models import ModelConfig, presets

  if size:  # layers and MLP width solved for the size, per variant
    return presets.model_config(size, variant, **model)
  return ModelConfig(variant=variant, **model)


def measure(variant: str, size: str, model: dict, length: int, batch_size: int,
            steps: int) -> dict:
  """Median seconds of one train step (after a compile step) and the parameter count."""
  import jax
  import numpy as np
  from flax import nnx

  from titans_jax import configs, optim, train_step
  from titans_jax.models import build_model

  config = build_model_config(variant, size, model)
  tx = optim.make_optimizer(configs.base_config().optimizer, total_steps=1000)
  network = build_model(config, nnx.Rngs(0))
  optimizer = nnx.Optimizer(network, tx, wrt=nnx.Param)
  params = sum(x.size for x in jax.tree.leaves(nnx.state(network, nnx.Param)))
  graphdef, state = nnx.split((network, optimizer))
  step = jax.jit(train_step.make_train_step(graphdef), donate_argnums=0)
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (batch_size, length + 1))
  batch = {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32),
           "weights": np.ones((batch_size, length), np.float32)}
  times = []
  for _ in range(steps + 1):  # the first one compiles
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times[1:])
  return {"seconds": seconds, "compile_seconds": times[0], "params": int(params),
          "tokens_per_second": batch_size * length / seconds, "layers": config.num_layers,
          "width": config.width, "loss": float(metrics["loss"])}


# ----------------------------------------------------------------------------- parent


def run_measurement(job: dict, *, timeout: float, memory_cap_gb: float) -> dict:
  """One worker subprocess; its result with peak RSS, or an error ('OOM', 'timeout', ...)."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = run_worker([os.path.abspath(__file__), "--worker=" + json.dumps(job)],
                      timeout=timeout, memory_cap_gb=memory_cap_gb, env=env)
  return {**job, **result}


def format_table(rows: list[dict], models: list[str], lengths: list[int]) -> str:
  """Markdown: rows = models, columns = lengths, cells = tokens/s (or the error)."""
  by_cell = {(r["variant"], r["length"]): r for r in rows}
  lines = ["| model | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
           "|---|" + "---|" * len(lengths)]
  for model in models:
    cells = []
    for length in lengths:
      row = by_cell.get((model, length))
      cells.append("" if row is None else row["error"] or f"{row['tokens_per_second']:,.0f}")
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def settings(args) -> dict:
  """The config file's settings with --quick and the command-line overrides applied."""
  config = load_config(args.config)
  models, lengths, steps = list(config.models), list(config.lengths), int(config.steps)
  model, size = dict(config.model), str(config.size)
  if args.quick:
    lengths, steps, model, size = (list(config.quick.lengths), int(config.quick.steps),
                                   dict(config.quick.model), "")
  if args.models:
    models = [m for m in args.models.split(",") if m]
  if args.lengths:
    lengths = [int(n) for n in args.lengths.split(",") if n]
  if args.steps:
    steps = args.steps
  from titans_jax.models.config import VARIANTS

  unknown = [m for m in models if m not in VARIANTS]
  if unknown:
    raise ValueError(f"models {unknown} are unknown; expected some of {VARIANTS}")
  if not lengths or min(lengths) < 1 or steps < 1:
    raise ValueError(f"lengths={lengths} and steps={steps} must be positive")
  return dict(models=models, lengths=lengths, steps=steps, model=model, size=size,
              batch_size=int(config.batch_size), timeout=float(config.timeout_s),
              memory_cap_gb=float(config.memory_cap_gb))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default=DEFAULT_CONFIG, help="config file[:arguments]")
  parser.add_argument("--quick", action="store_true", help="tiny model, short lengths, one step")
  parser.add_argument("--models", default="", help="comma-separated variants (default: config's)")
  parser.add_argument("--lengths", default="", help="comma-separated lengths (default: config's)")
  parser.add_argument("--steps", type=int, default=0, help="timed steps (default: config's)")
  parser.add_argument("--out", default="bench_results")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    job = json.loads(args.worker)
    result = measure(job["variant"], job["size"], job["model"], job["length"], job["batch_size"],
                     job["steps"])
    print("RESULT " + json.dumps(result), flush=True)
    return result
  try:
    run = settings(args)
  except ValueError as error:
    parser.error(str(error))
  print(f"size {run['size'] or 'config model'} {run['model']}, batch {run['batch_size']}, "
        f"median of {run['steps']} train steps", flush=True)
  rows = []
  for variant in run["models"]:
    for length in run["lengths"]:
      job = dict(variant=variant, size=run["size"], model=run["model"], length=length,
                 batch_size=run["batch_size"], steps=run["steps"])
      rows.append(run_measurement(job, timeout=run["timeout"], memory_cap_gb=run["memory_cap_gb"]))
      row = rows[-1]
      print(f"  {variant:>11} {length:>6}: " + (row["error"] or
            f"{row['tokens_per_second']:,.0f} tokens/s, {row['peak_rss_gb']:.2f} GB, "
            f"{row['params'] / 1e6:.2f}M params"), flush=True)
  table = format_table(rows, run["models"], run["lengths"])
  print("\ntokens/s (train step: forward + backward + AdamW)\n" + table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "throughput.json"), "w") as handle:
    json.dump({"settings": run, "rows": rows}, handle, indent=2)
  with open(os.path.join(args.out, "throughput.md"), "w") as handle:
    handle.write(table + "\n")
  print(f"\nResults: {os.path.join(args.out, 'throughput.json')}")
  return {"settings": run, "rows": rows}


if __name__ == "__main__":
  main()
