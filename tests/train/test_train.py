"""The training system in one process: outputs, resume, checkpoints, bad input."""

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.train.tiny_model import build_tiny, tiny_config
from titans_jax import checkpointing, configs, metrics, sharding, train


def losses(workdir):
  return {row["step"]: row["loss"] for row in metrics.read_jsonl(
      os.path.join(workdir, "metrics.jsonl")) if "loss" in row}


def run(workdir, **overrides):
  return train.train_and_evaluate(tiny_config(**overrides), str(workdir), model_builder=build_tiny)


def test_a_run_writes_config_metrics_tensorboard_and_checkpoints(tmp_path):
  result = run(tmp_path)
  assert result.step == 6
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["train"]["steps"] == 6
  assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5, 6]
  assert any(row.get("eval_loss") for row in metrics.read_jsonl(tmp_path / "metrics.jsonl"))
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]


def test_loss_decreases_on_learnable_text(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
  result = run(tmp_path / "run", **{"data.source": "text", "data.train_path": str(corpus),
                                    "model.vocab_size": 256, "train.steps": 30,
                                    "train.log_every": 5, "train.eval_every": 0})
  first, last = result.history[0]["loss"], result.history[-1]["loss"]
  assert last < 0.6 * first, (first, last)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
  whole = run(tmp_path / "whole", **{"train.eval_every": 0})
  accumulated = run(tmp_path / "accum", **{"train.grad_accum_steps": 2, "train.eval_every": 0})
  a, b = losses(whole.workdir), losses(accumulated.workdir)
  np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=1e-5)


def test_restart_resumes_and_matches_uninterrupted(tmp_path):
  uninterrupted = losses(run(tmp_path / "a", **{"train.eval_every": 0}).workdir)
  # The same config stopped at step 3 (a checkpoint), then started again in the same workdir.
  run(tmp_path / "b", **{"train.eval_every": 0, "train.steps": 6})
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "6")
  resumed = run(tmp_path / "b", **{"train.eval_every": 0})
  assert resumed.step == 6
  got = losses(tmp_path / "b")
  assert sorted(got) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([got[s] for s in range(1, 7)],
                             [uninterrupted[s] for s in range(1, 7)], rtol=1e-6)


def test_mismatched_checkpoint_is_an_error_and_kept(tmp_path):
  run(tmp_path, **{"train.steps": 3})
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  with pytest.raises(checkpointing.CheckpointError, match="width"):
    run(tmp_path, **{"train.steps": 6, "model.width": 48})
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_corrupt_checkpoint_is_an_error_and_kept(tmp_path):
  run(tmp_path, **{"train.steps": 3})
  step_dir = tmp_path / "checkpoints" / "3" / "state"
  for path in glob.glob(str(step_dir / "**" / "*"), recursive=True):
    if os.path.isfile(path) and "manifest" in os.path.basename(path):
      open(path, "wb").write(b"garbage")
  with pytest.raises(checkpointing.CheckpointError, match="corrupt|cannot be read"):
    run(tmp_path, **{"train.steps": 6})
  assert os.path.isdir(step_dir)


def test_corrupt_checkpoint_error_is_the_only_report(tmp_path):
  """Orbax abandons its other array reads when one fails; their late reports into the
  closed event loop must not follow the CheckpointError (a process of its own: they
  come at any time, up to its exit)."""
  script = textwrap.dedent(f"""
      import gc, glob, os, time
      from tests.train.tiny_model import build_tiny, tiny_config
      from titans_jax import checkpointing, train
      workdir = {str(tmp_path)!r}
      train.train_and_evaluate(tiny_config(**{{"train.steps": 3}}), workdir, model_builder=build_tiny)
      pattern = os.path.join(workdir, "checkpoints", "3", "state", "**", "*")
      for path in glob.glob(pattern, recursive=True):
        if os.path.isfile(path) and "manifest" in os.path.basename(path):
          open(path, "wb").write(b"garbage")
      try:
        train.train_and_evaluate(tiny_config(**{{"train.steps": 6}}), workdir, model_builder=build_tiny)
      except checkpointing.CheckpointError as error:
        print("CheckpointError:", error)
      gc.collect()
      time.sleep(1.0)
  """)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu"), timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "CheckpointError: the checkpoint at" in done.stdout, done.stdout[-3000:]
  for noise in ("Event loop is closed", "exception was never retrieved", "Traceback"):
    assert noise not in done.stderr, done.stderr[-3000:]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  # A huge step makes step 2 non-finite; step 1 was checkpointed.
  with pytest.raises(train.NonFiniteError, match=r"at step 2 .*checkpoint of step 1"):
    run(tmp_path, **{"optimizer.learning_rate": 1e30, "optimizer.warmup_steps": 0,
                     "train.checkpoint_every": 1, "optimizer.clip_norm": 1e30})
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


@pytest.mark.parametrize("overrides,message", [
    ({"mesh.data": 3}, "devices"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, "at most one -1"),
    ({"train.global_batch_size": 3, "train.grad_accum_steps": 2}, "grad_accum_steps"),
    ({"data.source": "text", "data.train_path": "/nonexistent/*.txt", "model.vocab_size": 256},
     "matches no readable file"),
    ({"data.source": "text", "data.train_path": "x.txt"}, "vocab_size"),
    ({"data.source": "webdataset"}, "unknown"),
    ({"train.steps": 0}, "train.steps"),
    ({"partitioner": "pjit"}, "partitioner='pjit' is unknown"),
])
def test_bad_input_is_a_clear_error(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    run(tmp_path, **overrides)
  assert not os.path.exists(tmp_path / "checkpoints" / "1")


def test_gspmd_is_refused_where_this_jax_has_only_shardy(tmp_path):
  if sharding.has_gspmd():  # jax < 0.12: GSPMD trains
    run(tmp_path, partitioner="gspmd", **{"train.steps": 1, "train.eval_every": 0})
  else:
    with pytest.raises(ValueError, match="no GSPMD partitioner.*set partitioner='shardy'"):
      run(tmp_path, partitioner="gspmd")


def test_pinned_mac_activations_are_refused_on_a_cpu_mesh_that_splits_every_axis():
  # Given the layout XLA:CPU mis-partitions (measured: losses 4e-3 off one device's)
  config = configs.base_config()
  config.model.variant, config.activation_constraints = "mac", True
  # Then training refuses it with what to change, and nothing else is refused
  with pytest.raises(ValueError, match=r"\(2, 2, 2\) mesh.*activation_constraints=False"):
    train.validate_activation_constraints(config, (2, 2, 2), "cpu")
  for mesh, backend in (((2, 2, 1), "cpu"), ((1, 4, 2), "cpu"), ((2, 2, 2), "tpu")):
    train.validate_activation_constraints(config, mesh, backend)
  config.model.variant = "mag"
  train.validate_activation_constraints(config, (2, 2, 2), "cpu")
  config.model.variant, config.activation_constraints = "mac", False
  train.validate_activation_constraints(config, (2, 2, 2), "cpu")


def test_empty_workdir_is_an_error():
  with pytest.raises(ValueError, match="workdir"):
    train.train_and_evaluate(tiny_config(), "", model_builder=build_tiny)


@pytest.mark.parametrize("workdir", ["gs://bucket/titans/run", "s3://bucket/run"])
def test_a_bucket_url_workdir_is_refused_with_the_mount_to_use(tmp_path, monkeypatch, workdir):
  # A URL would otherwise become a local folder named "gs:" and the bucket stay empty.
  monkeypatch.chdir(tmp_path)
  for call in (lambda: train.train_and_evaluate(tiny_config(), workdir, model_builder=build_tiny),
               lambda: train.load_model(workdir)):
    with pytest.raises(ValueError, match=r"is a URL.*gcsfuse.*--workdir=/gcs/BUCKET"):
      call()
  assert os.listdir(tmp_path) == []
