"""The memory benchmark script runs end to end (tiny lengths, our op only), on one
device and with the batch split over 2 CPU devices."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_memory_benchmark_quick(tmp_path):
  done = subprocess.run(
      [sys.executable, "benchmarks/memory_benchmark.py", "--lengths=128", "--modes=token",
       "--peers=none", "--steps=1", "--jax_devices=1,2", f"--out={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.load(open(tmp_path / "memory_benchmark.json"))
  rows = {row["devices"]: row for row in result["rows"]}
  assert sorted(rows) == [1, 2]
  for row in rows.values():
    assert row["error"] is None and row["tokens_per_second"] > 0 and row["peak_rss_gb"] > 0
    assert 0 < row["fraction_of_peak"] < 1
  table = open(tmp_path / "memory_benchmark.md").read()
  assert "| titans_jax | token | 128 |" in table and "| titans_jax | token, 2 dev | 128 |" in table
  assert any(line.startswith("FAIL: [2 CPU devices]") or line.startswith("PASS: [2 CPU devices]")
             for line in result["targets"])
