"""The recall harness and the quickstart, end to end on tiny models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from titans_jax import models
from titans_jax.evaluation import recall

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_model(variant="mag"):
  config = models.ModelConfig(variant=variant, vocab_size=256, width=16, num_layers=1, num_heads=2,
                              window=8, segment_len=8, memory_chunk=4, num_persistent=2)
  return models.build_model(config, nnx.Rngs(0))


def test_harness_on_a_random_model_gives_a_well_formed_table_json_and_png(tmp_path):
  # Given a randomly initialised tiny Titans
  model = tiny_model()
  # When the harness runs it over two lengths (streamed in pieces) and three depths
  result = recall.evaluate_recall(model, lengths=[128, 256], depths=[0.0, 0.5, 1.0], samples=2,
                                  piece_len=64, progress=False)
  paths = recall.write_report(result, str(tmp_path))
  # Then the table, the JSON and the PNG describe the same grid
  assert np.asarray(result.accuracy).shape == (2, 3)
  assert all(0.0 <= a <= 1.0 for row in result.token_accuracy for a in row)
  lines = paths["table"].splitlines()
  assert "depth 0.50" in lines[1] and lines[3].split()[0] == "128" and lines[4].split()[0] == "256"
  saved = json.load(open(paths["json"]))
  assert saved["lengths"] == [128, 256] and saved["depths"] == [0.0, 0.5, 1.0]
  with open(paths["png"], "rb") as handle:
    assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_harness_counts_a_sample_only_when_every_answer_token_is_right():
  # Given a model that always predicts the right next token (an oracle on the targets)
  source = recall.NeedleInHaystackSource(seq_len=128, depth=0.5, seed=recall.EVAL_SEED_OFFSET)
  examples = [source[i] for i in range(2)]
  inputs = np.stack([e["inputs"] for e in examples])
  targets = np.stack([e["targets"] for e in examples])
  weights = np.stack([e["weights"] for e in examples])

  class Oracle:
    def init_cache(self, batch):
      return 0

    def stream(self, x, position):
      length = x.shape[1]
      chosen = np.array(targets[:, position:position + length])
      chosen[1, -1] = (chosen[1, -1] + 1) % 256  # sample 1: one wrong token at the end
      return np.eye(256)[chosen], position + length

  oracle = Oracle()
  exact, correct, total = recall._predict_answers(oracle.stream, oracle, inputs, targets, weights, 50)
  # Then sample 0 is recalled, sample 1 (one answer token wrong) is not
  assert list(exact) == [True, False] and correct[1] == total[1] - 1


def test_lengths_too_short_for_the_needle_fail_clearly():
  with pytest.raises(ValueError, match="expected lengths >="):
    recall.evaluate_recall(tiny_model(), lengths=[16], depths=[0.5])


def test_shortened_quickstart_runs_end_to_end_and_the_cli_reads_its_checkpoint(tmp_path):
  # Given the README's quickstart, shortened to a few steps
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "titans_jax.main",
                         "--config=experiments/quickstart.py:runlocal", f"--workdir={tmp_path}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  # Then it trains, evaluates and says where everything is
  for line in ("Checkpoints:", "Metrics:", "Recall:", "Heatmap:"):
    assert line in done.stdout
  assert os.path.exists(tmp_path / "recall" / "recall.png")
  # And the CLI (its main, in this process) evaluates the saved checkpoint on its own
  recall.main([f"--workdir={tmp_path}", "--lengths=128", "--depths=0.5", "--samples=1",
               f"--out={tmp_path / 'cli'}"])
  assert json.load(open(tmp_path / "cli" / "recall.json"))["lengths"] == [128]
