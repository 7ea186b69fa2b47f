"""GenomicBenchmarks (Table 4): the folder reader, the classification objective, and the
experiments/t4_dna.py runlocal config training end to end on a generated folder."""

import math

import numpy as np
import pytest

from titans_jax.data import genomic
from titans_jax.data.registry import make_source

DATASET = "human_enhancers_cohn"


def write_benchmark(root, dataset=DATASET, classes=("positive", "negative"), per_class=6,
                    length=20, seed=0):
  """A fake download in genomic_benchmarks' layout: random ACGT, `length` bases per file."""
  rng = np.random.default_rng(seed)
  for split in genomic.SPLITS:
    for name in classes:
      folder = root / dataset / split / name
      folder.mkdir(parents=True)
      for i in range(per_class):
        folder.joinpath(f"{i}.txt").write_text("".join(rng.choice(list("ACGT"), length)))
  return root


def test_reader_labels_by_sorted_class_folder_and_pads_on_the_right(tmp_path):
  # Given two classes and one hand-written sequence (lower case, an N, a trailing newline)
  write_benchmark(tmp_path)
  (tmp_path / DATASET / "train" / "positive" / "0.txt").write_text("acgTN\n")
  source = genomic.GenomicSource(tmp_path, DATASET, split="train", seq_len=8)
  # Then classes are the sorted folder names and labels their index
  assert source.classes == ("negative", "positive") and source.num_classes == 2
  assert len(source) == 12 and source.labels.tolist() == [0] * 6 + [1] * 6
  example = source[6]  # positive/0.txt
  assert example["label"] == 1 and example["label"].dtype == np.int32
  # and bases become A=1 C=2 G=3 T=4 N=5, right-padded with 0 and weighted 1 where real
  np.testing.assert_array_equal(example["inputs"], [1, 2, 3, 4, 5, 0, 0, 0])
  np.testing.assert_array_equal(example["weights"], [1, 1, 1, 1, 1, 0, 0, 0])
  assert example["inputs"].dtype == np.int32 and genomic.decode(example["inputs"]) == "ACGTN"
  # A longer sequence keeps its first seq_len bases
  short = genomic.GenomicSource(tmp_path, DATASET, split="train", seq_len=3)
  np.testing.assert_array_equal(short[6]["inputs"], [1, 2, 3])
  assert short[0]["weights"].min() == 1.0


def test_reader_mistakes_are_clear(tmp_path):
  with pytest.raises(ValueError, match="download_dataset"):
    genomic.GenomicSource(tmp_path, DATASET, split="train", seq_len=8)
  write_benchmark(tmp_path)
  bad = tmp_path / DATASET / "test" / "negative" / "3.txt"
  bad.write_text("ACGXA")
  source = genomic.GenomicSource(tmp_path, DATASET, split="test", seq_len=8)
  with pytest.raises(ValueError, match=r"3\.txt: character 'X' at position 3"):
    source[3]
  with pytest.raises(ValueError, match="split='valid' is unknown"):
    genomic.GenomicSource(tmp_path, DATASET, split="valid", seq_len=8)


def test_registry_reads_train_and_test_and_checks_the_vocabulary(tmp_path):
  from titans_jax import configs

  write_benchmark(tmp_path, per_class=3)
  config = configs.base_config()
  config.data.update(source="genomic", genomic_dataset=DATASET, train_path=str(tmp_path),
                     seq_len=16)
  train_source = make_source(config.data, split="train", vocab_size=8)
  eval_source = make_source(config.data, split="eval", vocab_size=8)
  assert eval_source.split == "test" and len(train_source) == len(eval_source) == 6
  with pytest.raises(ValueError, match="model.vocab_size >= 6"):
    make_source(config.data, split="train", vocab_size=4)


def test_classification_loss_and_accuracy_match_a_hand_computation():
  from titans_jax import train_step

  # Given 2 rows of 3 positions and 2 classes; row 1 has one padded position
  logits = np.array([[[1.0, 0.0], [3.0, 0.0], [2.0, 6.0]],
                     [[0.0, 2.0], [0.0, 0.0], [50.0, -50.0]]], np.float32)
  batch = {"weights": np.array([[1, 1, 1], [1, 1, 0]], np.float32),
           "label": np.array([0, 1], np.int32)}
  loss_sum, count, correct = train_step.OBJECTIVES["classification"](logits, batch)
  # Then the logits are averaged over real positions: row 0 -> (2, 2), row 1 -> (0, 1)
  expected = math.log(2.0) + (-1.0 + math.log(1.0 + math.e))
  np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-6)
  assert float(count) == 2.0
  assert float(correct) == 2.0  # argmax ties pick class 0 (row 0's label); row 1 -> class 1
  with pytest.raises(ValueError, match="train.objective='regression' is unknown"):
    train_step.make_eval_step(None, objective="regression")


def test_t4_runlocal_trains_and_reports_eval_accuracy(tmp_path):
  from experiments import t4_dna
  from titans_jax import train

  # Given the runlocal config pointed at a generated two-class folder of 10 test sequences
  write_benchmark(tmp_path / "data", length=40, per_class=5)
  config = t4_dna.get_config("runlocal,steps=2")
  config.data.train_path = str(tmp_path / "data")
  assert config.model.output_dim == 2 and config.data.seq_len == 32
  # A head of the wrong size is refused before anything compiles
  config.model.output_dim = 3
  with pytest.raises(ValueError, match="model.output_dim=3 but the data has 2 classes"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  config.model.output_dim = 2
  config.train.early_stopping_patience = 3  # GenomicBenchmarks has no validation split
  with pytest.raises(ValueError, match="needs a validation split apart from the test split"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  config.train.early_stopping_patience = 0
  # and eval_steps of 8 batches of 4, more than the 3 the test split fills (the last: 2 + 2 padding)
  config.train.eval_steps = 8
  # Then 2 steps train to a finite loss and the evaluation reports accuracy over examples
  result = train.train_and_evaluate(config, str(tmp_path / "work"))
  losses = [row["loss"] for row in result.history if "loss" in row]
  evals = [row for row in result.history if "eval_accuracy" in row]
  assert result.step == 2 and len(losses) == 2 and np.isfinite(losses).all()
  assert len(evals) == 1 and 0.0 <= evals[0]["eval_accuracy"] <= 1.0
  # each of the 10 test sequences counted once: the loss and accuracy of the model by hand
  from flax import nnx

  source = genomic.GenomicSource(tmp_path / "data", DATASET, split="test", seq_len=32)
  examples = [source[i] for i in range(len(source))]
  weights = np.stack([e["weights"] for e in examples])
  labels = np.array([e["label"] for e in examples])
  model, _ = nnx.merge(result.graphdef, result.state)
  inputs = np.stack([e["inputs"] for e in examples])
  logits = np.asarray(nnx.jit(lambda m, x: m(x))(model, inputs), np.float64)
  pooled = np.einsum("btc,bt->bc", logits, weights) / weights.sum(1, keepdims=True)
  log_probs = pooled - np.log(np.exp(pooled).sum(1, keepdims=True))
  assert len(labels) == 10
  np.testing.assert_allclose(evals[0]["eval_loss"], -log_probs[np.arange(10), labels].mean(),
                             rtol=1e-5)
  assert evals[0]["eval_accuracy"] == pytest.approx(np.mean(pooled.argmax(1) == labels))
