"""Streaming a long document through a small Titans (LMM by default): tokens/s and peak
memory at 64K, 256K and 1M tokens. The state has a fixed size, so peak memory should
not grow with the length (only the host's per-position loss array does: 4 bytes/token).

    python benchmarks/streaming_benchmark.py                       # 64K, 256K, 1M tokens
    python benchmarks/streaming_benchmark.py --lengths=65536 --variant=mag

Each length runs in a fresh process so its peak resident memory (ru_maxrss) is its own;
the timing excludes compilation (one warm-up piece first).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def child(variant: str, length: int, piece_len: int) -> dict:
  import resource
  import time

  import numpy as np
  from flax import nnx

  from titans_jax import models
  from titans_jax.evaluation import streaming

  config = models.ModelConfig(variant=variant, vocab_size=256, width=128, num_layers=2, num_heads=4,
                              window=128, segment_len=128, memory_depth=2, memory_chunk=16)
  model = models.build_model(config, nnx.Rngs(0))
  tokens = np.random.default_rng(0).integers(0, 256, (1, length + 1))
  streaming.stream_losses(model, tokens[:, :piece_len + 1], piece_len)  # compile
  started = time.perf_counter()
  result = streaming.stream_losses(model, tokens, piece_len)
  seconds = time.perf_counter() - started
  return {"variant": variant, "tokens": length, "piece_len": piece_len, "seconds": seconds,
          "tokens_per_second": length / seconds, "mean_nll": float(result.nll.mean()),
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lengths", default="65536,262144,1048576")
  parser.add_argument("--variant", default="lmm")
  parser.add_argument("--piece_len", type=int, default=4096)
  parser.add_argument("--json", default="", help="also write the rows here")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  lengths = [int(n) for n in args.lengths.split(",") if n]
  if args.child:
    print(json.dumps(child(args.variant, lengths[0], args.piece_len)))
    return
  rows = []
  print(f"{'variant':>8} {'tokens':>9} {'tokens/s':>10} {'seconds':>8} {'peak RSS (MiB)':>15}")
  for length in lengths:
    output = subprocess.run([sys.executable, __file__, "--child", f"--lengths={length}",
                             f"--variant={args.variant}", f"--piece_len={args.piece_len}"],
                            check=True, capture_output=True, text=True).stdout
    row = json.loads(output.strip().splitlines()[-1])
    rows.append(row)
    print(f"{row['variant']:>8} {row['tokens']:>9} {row['tokens_per_second']:>10,.0f} "
          f"{row['seconds']:>8.1f} {row['peak_rss_mib']:>15,.0f}", flush=True)
  if len(rows) > 1:
    growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak memory at {rows[-1]['tokens']} vs {rows[0]['tokens']} tokens: x{growth:.2f} "
          f"(length x{rows[-1]['tokens'] / rows[0]['tokens']:.0f})")
  if args.json:
    with open(args.json, "w") as handle:
      json.dump(rows, handle, indent=2)


if __name__ == "__main__":
  main()
