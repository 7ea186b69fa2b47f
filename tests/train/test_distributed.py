"""The training system across devices and processes, run as real subprocesses:
a (2, 2, 2) mesh of 8 CPU devices, two jax.distributed processes on localhost,
and a run killed with SIGKILL then resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from titans_jax import checkpointing, metrics, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "--config=tests/train/tiny_experiment.py"
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")


def main_command(workdir, *flags):
  return [sys.executable, "-m", "titans_jax.main", CONFIG, f"--workdir={workdir}", *flags]


def run_main(workdir, *flags, timeout=240):
  done = subprocess.run(main_command(workdir, *flags), cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=timeout)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return done.stdout


def losses(workdir):
  rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [row["loss"] for row in sorted(rows, key=lambda r: r["step"]) if "loss" in row]


def test_mesh_2x2x2_matches_one_device_and_follows_the_rules(tmp_path):
  probe = subprocess.run([sys.executable, "tests/train/sharding_probe.py", str(tmp_path / "mesh")],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
  assert probe.returncode == 0, probe.stderr[-3000:]
  report = json.loads(probe.stdout.split("PROBE ", 1)[1])
  assert "does not divide" in report.pop("bad_batch_error")
  bad_mesh = report.pop("bad_mesh_error")
  assert bad_mesh is not None and "down/kernel has shape (20, 10)" in bad_mesh, bad_mesh
  assert "('tensor',) = 8 devices" in bad_mesh, bad_mesh
  pinned_mac = report.pop("pinned_mac_error")
  assert pinned_mac is not None and "XLA:CPU mis-partitions" in pinned_mac, pinned_mac
  for name, entry in report.items():
    assert entry["actual"] == entry["expected"], name
  assert report["embed/embedding"]["actual"] == ["tensor", "fsdp"]
  run_main(tmp_path / "single", "--config.train.eval_every=0")
  np.testing.assert_allclose(losses(tmp_path / "mesh"), losses(tmp_path / "single"), rtol=1e-5)


def run_probe(workdir, model, devices, partitioner="shardy"):
  probe = subprocess.run([sys.executable, "tests/train/sharding_probe.py", str(workdir), model,
                          str(devices), partitioner], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=240)
  assert probe.returncode == 0, probe.stderr[-3000:]
  return json.loads(probe.stdout.split("PROBE ", 1)[1])


# Shardy everywhere; GSPMD too where this JAX still has it (before 0.12).
@pytest.mark.parametrize("partitioner", ["shardy"] + (["gspmd"] if sharding.has_gspmd() else []))
def test_zoo_titans_on_a_2x2x2_mesh_matches_one_device(tmp_path, partitioner):
  # Given a tiny Titans MAC from the zoo, trained on 8 devices and on one
  report = run_probe(tmp_path / "mesh", "zoo", 8, partitioner)
  run_probe(tmp_path / "single", "zoo", 1, partitioner)
  # Then every parameter is placed as its logical names say, and the losses agree
  for name, entry in report.items():
    assert entry["actual"] == entry["expected"], name
  assert report["layers/0/mixer/attention/q_proj/kernel"]["actual"] == ["fsdp", "tensor"]
  mesh, single = losses(tmp_path / "mesh"), losses(tmp_path / "single")
  assert len(mesh) == 4
  np.testing.assert_allclose(mesh, single, rtol=2e-5)


def test_two_processes_match_one(tmp_path):
  command = [sys.executable, "launch/local.py", "--processes=2", "--timeout=240", "--", CONFIG,
             f"--workdir={tmp_path / 'two'}", "--config.train.eval_every=0"]
  done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-4000:]
  assert "2 process(es), 2 cpu device(s)" in done.stdout
  run_main(tmp_path / "one", "--config.train.eval_every=0")
  two, one = losses(tmp_path / "two"), losses(tmp_path / "one")
  assert len(two) == len(one) == 6
  np.testing.assert_allclose(two, one, rtol=1e-5)


def test_sigkill_between_checkpoints_then_resume_equals_uninterrupted(tmp_path):
  flags = ["--config.train.steps=400", "--config.train.checkpoint_every=50",
           "--config.train.eval_every=0", "--config.train.log_every=1",
           "--config.data.seq_len=64", "--config.model.width=64"]
  killed = tmp_path / "killed"
  child = subprocess.Popen(main_command(killed, *flags), cwd=ROOT, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  committed = killed / "checkpoints" / "50" / "commit_success.txt"
  for line in child.stdout:  # kill once checkpoint 50 is committed and training went on past it
    step = int(line.split("step ", 1)[1].split("/", 1)[0]) if "step " in line else 0
    if (committed.exists() and step > 50) or time.time() > deadline:
      break
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert child.returncode == -signal.SIGKILL
  latest = checkpointing.Checkpointer(str(killed)).latest_step()
  assert latest is not None and latest < 400, "the run must be killed mid-way"

  output = run_main(killed, *flags)
  assert f"Resuming from the checkpoint of step {latest}" in output
  run_main(tmp_path / "straight", *flags)
  resumed, straight = losses(killed), losses(tmp_path / "straight")
  assert len(resumed) == len(straight) == 400
  np.testing.assert_allclose(resumed, straight, rtol=1e-6)
  # Nothing left corrupt: no half-written folder, every kept checkpoint committed whole.
  for step in os.listdir(killed / "checkpoints"):
    assert step.isdigit(), f"leftover {step}"
    assert {"data", "meta", "state"} <= set(os.listdir(killed / "checkpoints" / step))


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  flags = ["--config.train.steps=100000", "--config.train.checkpoint_every=100000",
           "--config.train.eval_every=0", "--config.train.log_every=1"]
  child = subprocess.Popen(main_command(tmp_path, *flags), cwd=ROOT, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in child.stdout:
    if "step 5/" in line:
      break
  child.send_signal(signal.SIGTERM)
  rest = child.communicate(timeout=120)[0]
  assert child.returncode == 0, rest[-3000:]
  saved = checkpointing.Checkpointer(str(tmp_path)).latest_step()
  assert saved is not None and saved >= 5
  assert f"SIGTERM: saved step {saved}" in rest
