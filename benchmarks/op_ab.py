"""Paired A/B of the memory op: this checkout against another, at the same time, one core each.

  python benchmarks/op_ab.py --baseline=/path/to/other/checkout            # 2K, token, 4 rounds
  python benchmarks/op_ab.py --baseline=../old --length=8192 --mode=chunk --rounds=6
  python benchmarks/op_ab.py --baseline=../old --layer --length=8192   # projections + op

On a machine whose cores are shared (here ~33% steal), one step of the op moves 20-30%
between runs, more than most single changes gain. So both versions run together: each
round starts the baseline's and this checkout's op step (`memory_benchmark.py --worker=jax
--op_only`: forward + backward of the op alone, benchmark shapes) in two subprocesses
pinned to different cores, and swaps the cores every round. A slow spell falls on both;
the per-round ratio (this / baseline, lower is faster) is what is reported, with its median.

Each side imports `titans_jax` from its own checkout (PYTHONPATH); the worker script is
this checkout's, so both measure the same thing. `--layer` times the benchmark's whole
memory layer (projections + op, one device) instead; the layer is written in the worker
script, so there each side runs its own checkout's `benchmarks/memory_benchmark.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _measure import parse_result, ratio_summary  # noqa: E402  (the benchmarks' shared helpers)


def _start(checkout: str, core: int, args) -> subprocess.Popen:
  from titans_jax import host_malloc

  # The benchmark workers' allocator (huge pages for malloc), for both sides alike.
  env = host_malloc.environment(dict(os.environ, PYTHONPATH=checkout, PYTHONUNBUFFERED="1"))
  # The op alone: this checkout's worker for both sides. The layer (--layer) is defined in
  # the worker script itself, so there each side runs its own checkout's.
  script_dir = os.path.join(checkout, "benchmarks") if args.layer else HERE
  command = [sys.executable, os.path.join(script_dir, "memory_benchmark.py"), "--worker=jax",
             f"--length={args.length}", f"--mode={args.mode}", f"--steps={args.steps}"]
  if not args.layer:
    command.append("--op_only")
  return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}))


def _seconds(child: subprocess.Popen, name: str) -> float:
  stdout, stderr = child.communicate()
  result = parse_result(stdout)
  if child.returncode or result is None:
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    raise SystemExit(f"{name} failed (exit {child.returncode}): {tail}")
  return result["seconds"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--baseline", required=True,
                      help="root of the other checkout (the folder holding its titans_jax/)")
  parser.add_argument("--length", type=int, default=2048)
  parser.add_argument("--mode", default="token", choices=["token", "chunk"])
  parser.add_argument("--steps", type=int, default=5, help="timed steps per run (median)")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--layer", action="store_true",
                      help="time the whole memory layer (projections + op) instead of the op alone")
  args = parser.parse_args()
  baseline = os.path.abspath(args.baseline)
  if not os.path.isfile(os.path.join(baseline, "titans_jax", "ops", "memory.py")):
    raise SystemExit(f"--baseline={args.baseline}: no titans_jax/ops/memory.py there; give the "
                     "root of another titans_jax checkout (e.g. `git worktree add ../old HEAD~1`)")
  if not hasattr(os, "sched_setaffinity"):
    raise SystemExit("op_ab.py pins each side to a core with os.sched_setaffinity (Linux only)")
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    raise SystemExit(f"op_ab.py needs 2 cores to run both sides at once; this process has {cores}")
  what = "memory-layer step" if args.layer else "op step"
  print(f"{what} (forward + backward), {args.length} tokens, {args.mode} retrieval; "
        f"baseline {baseline} vs this checkout {ROOT}", flush=True)
  ratios = []
  for round_index in range(args.rounds):
    first, second = (cores[0], cores[1]) if round_index % 2 == 0 else (cores[1], cores[0])
    children = _start(baseline, first, args), _start(ROOT, second, args)
    old, new = _seconds(children[0], "baseline"), _seconds(children[1], "this checkout")
    ratios.append(new / old)
    print(f"round {round_index + 1}: baseline {old:.3f} s, this checkout {new:.3f} s, "
          f"ratio {new / old:.3f}", flush=True)
  print(ratio_summary(ratios, "this / baseline"))


if __name__ == "__main__":
  main()
