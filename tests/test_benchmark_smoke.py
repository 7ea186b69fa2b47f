"""The memory benchmark script runs end to end (tiny lengths, our op only)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_memory_benchmark_quick(tmp_path):
  done = subprocess.run(
      [sys.executable, "benchmarks/memory_benchmark.py", "--lengths=128", "--modes=token",
       "--peers=none", "--steps=1", f"--out={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.load(open(tmp_path / "memory_benchmark.json"))
  (row,) = result["rows"]
  assert row["error"] is None and row["tokens_per_second"] > 0 and row["peak_rss_gb"] > 0
  assert 0 < row["fraction_of_peak"] < 1
  assert "| titans_jax | token | 128 |" in open(tmp_path / "memory_benchmark.md").read()
