"""The benchmark scripts run end to end (tiny lengths, our op only): the memory benchmark
on one device and with the batch split over 2 CPU devices, the paired op / layer A/B, and
the dense-projection A/B, and the op profile."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_memory_benchmark_quick(tmp_path):
  done = subprocess.run(
      [sys.executable, "benchmarks/memory_benchmark.py", "--lengths=128", "--modes=token",
       "--peers=none", "--steps=1", "--jax_devices=1,3", f"--out={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  # 3 devices cannot split the batch of 4: the most that can (2) run instead, and it says so.
  assert "3 devices do not split the batch of 4; using 2" in done.stdout, done.stdout
  result = json.load(open(tmp_path / "memory_benchmark.json"))
  # What the peak (and so every ratio) depends on is recorded with it.
  assert result["machine"].startswith(f"{os.cpu_count()} cores, "), result["machine"]
  rows = {row["devices"]: row for row in result["rows"]}
  assert sorted(rows) == [1, 2]
  for row in rows.values():
    assert row["error"] is None and row["tokens_per_second"] > 0 and row["peak_rss_gb"] > 0
    assert 0 < row["fraction_of_peak"] < 1
  table = open(tmp_path / "memory_benchmark.md").read()
  assert "| titans_jax | token | 128 |" in table and "| titans_jax | token, 2 dev | 128 |" in table
  # The analytic training FLOPs per token are printed with each row, and "% of peak" uses them.
  header = next(line for line in table.splitlines() if line.startswith("| impl |")).split(" | ")
  ours = next(line for line in table.splitlines() if line.startswith("| titans_jax | token | 128 |"))
  column = dict(zip(header, ours.split(" | ")))
  flops = rows[1]["flops_per_token"]
  assert float(column["MFLOP/token"]) == round(flops / 1e6, 2), column
  fraction = flops * rows[1]["tokens_per_second"] / result["matmul_peak_flops"]
  assert abs(rows[1]["fraction_of_peak"] - fraction) < 1e-12
  assert any(line.startswith("FAIL: [2 CPU devices]") or line.startswith("PASS: [2 CPU devices]")
             for line in result["targets"])


def test_op_ab_against_itself(tmp_path):
  """The paired A/B script runs both sides at once and reports a ratio per round."""
  for extra in ([], ["--layer"]):
    done = subprocess.run(
        [sys.executable, "benchmarks/op_ab.py", f"--baseline={ROOT}", "--length=128",
         "--rounds=1", "--steps=1"] + extra, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "round 1: baseline" in done.stdout and "median ratio" in done.stdout
    assert ("memory-layer step" in done.stdout) == bool(extra)


def test_dense_ab_quick():
  done = subprocess.run(
      [sys.executable, "benchmarks/dense_ab.py", "--tokens=64", "--d_in=16", "--d_out=24",
       "--heads=2", "--rounds=2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "round 2: plain" in done.stdout and "median ratio (2-D / plain)" in done.stdout
  bad = subprocess.run([sys.executable, "benchmarks/dense_ab.py", "--d_out=10", "--heads=4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert bad.returncode != 0 and "--d_out=10 must split" in bad.stderr


def test_op_ab_names_a_bad_baseline(tmp_path):
  done = subprocess.run([sys.executable, "benchmarks/op_ab.py", f"--baseline={tmp_path}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert done.returncode != 0 and "no titans_jax/ops/memory.py there" in done.stderr


def test_op_profile_joins_the_trace_with_the_hlo():
  """Every matmul of the op step shows up with its phase, shapes and a speed."""
  done = subprocess.run(
      [sys.executable, "benchmarks/op_profile.py", "--length=128", "--devices=2", "--steps=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ")][1:]
  phases = {row[1] for row in rows if not row[0].startswith("|---")}
  assert phases == {"forward", "backward"}, done.stdout
  gflop = {}
  for line in done.stdout.splitlines():
    if line.startswith("matmuls, "):  # "matmuls, forward: 13.6 ms, 0.48 GFLOP, 70 GFLOP/s"
      gflop[line.split(", ")[1].split(":")[0]] = float(line.split(", ")[2].split()[0])
    if line.startswith("analytic forward FLOPs"):
      gflop["analytic"] = float(line.split(": ")[1].split()[0])
  # The benchmark's FLOP count (its % of peak) never overstates what the op executes; the
  # backward pass runs each forward matmul's two transposes.
  assert 1.0 <= gflop["forward"] / gflop["analytic"] <= 1.1, gflop
  assert 1.9 <= gflop["backward"] / gflop["forward"] <= 2.3, gflop
  assert "threads busy on average" in done.stdout
  # A loop's event holds its body's ops: never counted as an op of its own (double counting).
  kinds = [line.split("ms  ")[-1] for line in done.stdout.splitlines() if line.startswith("  ")]
  assert kinds and "while" not in kinds, done.stdout
  # It runs with the benchmark workers' allocator (huge pages where glibc and the kernel have them).
  from titans_jax import host_malloc
  expected = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" if host_malloc.enabled() else "the C library's default"
  assert f"malloc: {expected};" in done.stdout.splitlines()[0], done.stdout.splitlines()[0]
  layer = subprocess.run(
      [sys.executable, "benchmarks/op_profile.py", "--length=128", "--steps=1", "--layer"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert layer.returncode == 0, layer.stderr[-2000:]
  assert layer.stdout.startswith("memory layer (projections + op) forward + backward"), layer.stdout
  # The layer's FLOP count (projections + op) matches what its forward pass executes too.
  layer_gflop = {}
  for line in layer.stdout.splitlines():
    if line.startswith("matmuls, forward: "):
      layer_gflop["forward"] = float(line.split(", ")[2].split()[0])
    if line.startswith("analytic forward FLOPs of the layer"):
      layer_gflop["analytic"] = float(line.split(": ")[1].split()[0])
  assert 1.0 <= layer_gflop["forward"] / layer_gflop["analytic"] <= 1.1, layer.stdout
  bad = subprocess.run([sys.executable, "benchmarks/op_profile.py", "--devices=3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert bad.returncode != 0 and "--devices=3 must divide the batch (4)" in bad.stderr
