"""The memory op inside `jax.shard_map` (a real 2-device CPU mesh in a subprocess): the
scan carry built from replicated initial weights takes the per-shard type, and the
outputs and gradients equal one device's."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_memory_op_under_shard_map_matches_one_device():
  done = subprocess.run([sys.executable, "tests/ops/shard_map_probe.py"], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.strip().splitlines()[-1])
  for name in ("fast", "reference"):
    assert report[name]["value"] > 0
    assert report[name]["relative_difference"] < 1e-12, (name, report)
