"""The benchmark scripts run end to end (tiny lengths, our op only): the memory benchmark
on one device and with the batch split over 2 CPU devices, and the paired op A/B."""

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


def test_op_ab_against_itself(tmp_path):
  """The paired A/B script runs both sides at once and reports a ratio per round."""
  done = subprocess.run(
      [sys.executable, "benchmarks/op_ab.py", f"--baseline={ROOT}", "--length=128",
       "--rounds=1", "--steps=1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "round 1: baseline" in done.stdout and "median ratio" in done.stdout


def test_op_ab_names_a_bad_baseline(tmp_path):
  done = subprocess.run([sys.executable, "benchmarks/op_ab.py", f"--baseline={tmp_path}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert done.returncode != 0 and "no titans_jax/ops/memory.py there" in done.stderr
