"""Table 3 forecasting: the Time-Series-Library CSV reader (borders, scaler, windows,
errors), the forecast objective, the SiMBA-LMM forecaster's shapes, and the
experiments/t3_forecasting.py runlocal config training end to end on a generated CSV."""

import math

import numpy as np
import pytest

from titans_jax.data import timeseries
from titans_jax.data.registry import make_source

ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
ETTH_ROWS = 17420  # the real ETTh1's length
TRAIN_END = 12 * 30 * 24  # 8640: TSLib's ETTh train border


def write_csv(path, rows, columns, value=None):
  """date + columns; column j of row r = (j + 1) r + 100 j unless `value(r, j)` says."""
  path.parent.mkdir(parents=True, exist_ok=True)
  value = value or (lambda r, j: (j + 1) * r + 100 * j)
  dates = np.datetime64("2016-07-01T00:00") + np.arange(rows) * np.timedelta64(1, "h")
  lines = ["date," + ",".join(columns)]
  for r in range(rows):
    lines.append(str(dates[r]).replace("T", " ") + "," +
                 ",".join(repr(float(value(r, j))) for j in range(len(columns))))
  path.write_text("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="module")
def ett_folder(tmp_path_factory):
  """A folder in the all_six_datasets layout with a fake ETTh1 of the real shape."""
  folder = tmp_path_factory.mktemp("tslib")
  write_csv(folder / "ETT-small" / "ETTh1.csv", ETTH_ROWS, ETT_COLUMNS)
  return folder


def test_ett_borders_scaler_and_windows_follow_tslib(ett_folder):
  # Given the ETTh1 layout, lookback 96 and horizon 96
  sources = {split: timeseries.TimeSeriesSource(str(ett_folder), "etth1", split=split,
                                                lookback=96, horizon=96)
             for split in timeseries.SPLITS}
  test = sources["test"]
  # Then the borders are 12 / 4 / 4 months of hours, val / test starting 96 rows early
  assert test.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
  assert {s: len(src) for s, src in sources.items()} == {
      "train": 8640 - 192 + 1, "val": 2976 - 192 + 1, "test": 2976 - 192 + 1}
  # and the scaler is fitted on rows 0..8639 only: column j has mean (j + 1) 4319.5 + 100 j
  # and std (j + 1) sqrt((8640^2 - 1) / 12), so every column scales to (r - 4319.5) / s
  j = np.arange(7)
  np.testing.assert_allclose(test.scaler.mean, (j + 1) * 4319.5 + 100 * j)
  s = math.sqrt((TRAIN_END**2 - 1) / 12)
  np.testing.assert_allclose(test.scaler.scale, (j + 1) * s)
  example = test[0]
  assert example["inputs"].shape == (96, 7) and example["targets"].shape == (96, 7)
  assert example["inputs"].dtype == example["targets"].dtype == np.float32
  scaled = lambda rows: np.repeat(((rows - 4319.5) / s)[:, None], 7, axis=1)
  # Test window 0 reads rows 11424..11519 and predicts rows 11520..11615 (the test border)
  np.testing.assert_allclose(example["inputs"], scaled(np.arange(11424, 11520)), rtol=1e-6)
  np.testing.assert_allclose(example["targets"], scaled(np.arange(11520, 11616)), rtol=1e-6)
  last = sources["train"][len(sources["train"]) - 1]
  np.testing.assert_allclose(last["targets"][-1], scaled(np.array([8639]))[0], rtol=1e-6)
  # Horizons change only the targets' length
  long = timeseries.TimeSeriesSource(str(ett_folder), "ETTh1", split="val", lookback=96,
                                     horizon=720)
  assert long[0]["targets"].shape == (720, 7) and len(long) == 2976 - 816 + 1


def test_ratio_split_moves_ot_last_and_reads_subfolders(tmp_path):
  # Given a weather.csv of 1000 rows whose first column is OT
  write_csv(tmp_path / "weather" / "weather.csv", 1000, ("OT", "a", "b"),
            value=lambda r, j: r if j == 0 else 1.0 + j)  # a, b constant
  source = timeseries.TimeSeriesSource(str(tmp_path), "Weather", split="test", lookback=96,
                                       horizon=96)
  # Then 70 / 10 / 20%: train 0..699, val 604..799, test 704..999; OT is the last column
  assert source.borders == {"train": (0, 700), "val": (604, 800), "test": (704, 1000)}
  assert source.columns == ("a", "b", "OT") and len(source) == 296 - 192 + 1
  # A constant column keeps scale 1 (becomes 0); OT scales by the train rows 0..699
  s = math.sqrt((700**2 - 1) / 12)
  np.testing.assert_allclose(source.scaler.scale[:2], [1.0, 1.0])
  np.testing.assert_allclose(source[0]["targets"][:, 2], (np.arange(800, 896) - 349.5) / s,
                             rtol=1e-5)
  np.testing.assert_array_equal(source[0]["inputs"][:, :2], 0.0)


def test_mistakes_are_clear(tmp_path):
  with pytest.raises(ValueError, match="data.ts_dataset='exchange' is unknown"):
    timeseries.TimeSeriesSource(str(tmp_path), "exchange", split="train")
  with pytest.raises(ValueError, match="no ETTh1.csv .*all_six_datasets"):
    timeseries.TimeSeriesSource(str(tmp_path), "ETTh1", split="train")
  with pytest.raises(ValueError, match="split='valid' is unknown"):
    timeseries.TimeSeriesSource(str(tmp_path), "ETTh1", split="valid")
  # An ETT file shorter than its 20 months, and a ratio split too short for one window
  write_csv(tmp_path / "ETTh2.csv", 1000, ETT_COLUMNS)
  with pytest.raises(ValueError, match="has 1000 rows but its test split ends at row 14400"):
    timeseries.TimeSeriesSource(str(tmp_path), "ETTh2", split="train")
  write_csv(tmp_path / "traffic.csv", 150, ("a", "b"))
  with pytest.raises(ValueError, match="train split .* too short for one window"):
    timeseries.TimeSeriesSource(str(tmp_path), "traffic", split="test")
  (tmp_path / "electricity.csv").write_text("time,a\n1,2\n")
  with pytest.raises(ValueError, match="expected a 'date' column first"):
    timeseries.TimeSeriesSource(str(tmp_path), "electricity", split="train")
  with pytest.raises(ValueError, match=r"data.ts_horizon=0 must be an int >= 1"):
    timeseries.TimeSeriesSource(str(tmp_path), "ETTh2", split="train", horizon=0)


def test_registry_reads_train_and_test(ett_folder):
  from titans_jax import configs

  config = configs.base_config()
  config.data.update(source="timeseries", train_path=str(ett_folder), ts_dataset="ETTh1",
                     ts_lookback=96, ts_horizon=192)
  train_source = make_source(config.data, split="train", vocab_size=256)
  eval_source = make_source(config.data, split="eval", vocab_size=256)
  assert train_source.split == "train" and eval_source.split == "test"
  assert eval_source[0]["targets"].shape == (192, 7)
  assert make_source(config.data, split="val", vocab_size=256).split == "val"


def test_forecast_loss_is_mse_and_the_accuracy_slot_is_mae():
  from titans_jax import train_step

  rng = np.random.default_rng(0)
  outputs = rng.normal(size=(2, 5, 3)).astype(np.float32)
  targets = rng.normal(size=(2, 5, 3)).astype(np.float32)
  squared, count, absolute = train_step.OBJECTIVES["forecast"](outputs, {"targets": targets})
  assert float(count) == 30.0
  np.testing.assert_allclose(float(squared) / float(count), np.mean((outputs - targets)**2),
                             rtol=1e-6)
  np.testing.assert_allclose(float(absolute) / float(count), np.mean(np.abs(outputs - targets)),
                             rtol=1e-6)


def test_forecaster_patches_and_shapes():
  import jax
  from flax import nnx

  from titans_jax.models import ModelConfig, forecast

  config = forecast.ForecastConfig(
      model=ModelConfig(variant="lmm", input_dim=3, output_dim=3, width=16, num_layers=1,
                        num_heads=2, num_persistent=0, memory_chunk=4),
      lookback=32, horizon=8, patch_len=16, patch_stride=8)
  model = forecast.SimbaForecaster(config, nnx.Rngs(0))
  # PatchTST end padding: (32 + 8 - 16) // 8 + 1 = 4 patches, the last repeats the end value
  patches = model.patches(np.arange(32, dtype=np.float32)[None])
  assert patches.shape == (1, 4, 16) and config.num_patches == 4
  np.testing.assert_array_equal(patches[0, 3], list(range(24, 32)) + [31] * 8)
  # Shapes only (traced, not run: the runlocal test below runs the model end to end)
  out = jax.eval_shape(model, jax.ShapeDtypeStruct((2, 32, 3), np.float32))
  assert out.shape == (2, 8, 3) and out.dtype == np.float32
  with pytest.raises(ValueError, match="expected floats \\[batch, lookback=32, variables=3\\]"):
    model(np.zeros((2, 32, 4), np.float32))
  with pytest.raises(ValueError, match="model.output_dim=1 but model.input_dim=3"):
    forecast.ForecastConfig(model=config.model.replace(output_dim=1))


def test_t3_runlocal_trains_and_reports_eval_mse_and_mae(ett_folder, tmp_path):
  from experiments import t3_forecasting
  from titans_jax import train

  # Given the runlocal config pointed at the generated ETTh1 folder
  config = t3_forecasting.get_config("runlocal,steps=2")
  config.data.train_path = str(ett_folder)
  assert config.model.input_dim == 7 and config.model.lookback == config.data.ts_lookback == 32
  assert config.train.objective == "forecast" and config.model.width == 16
  # Mismatches are refused before anything compiles
  config.data.ts_horizon = 192
  with pytest.raises(ValueError, match="model.horizon=96 but data.ts_horizon=192"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  config.data.ts_horizon = 96
  config.train.objective = "lm"
  with pytest.raises(ValueError, match="'forecast' needs"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  config.train.objective = "forecast"
  config.train.eval_every = 0  # early stopping (patience 3) needs evaluations
  with pytest.raises(ValueError, match="early_stopping_patience=3 checks the validation loss"):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  config.train.eval_every = 2
  # Then 2 steps train to a finite loss and the evaluation reports MSE and MAE
  result = train.train_and_evaluate(config, str(tmp_path / "work"))
  losses = [row["loss"] for row in result.history if "loss" in row]
  evals = [row for row in result.history if "eval_mse" in row]
  assert result.step == 2 and len(losses) == 2 and np.isfinite(losses).all()
  assert len(evals) == 1 and np.isfinite([evals[0]["eval_mse"], evals[0]["eval_mae"]]).all()
  assert evals[0]["eval_mse"] == evals[0]["eval_loss"] > 0 and evals[0]["eval_mae"] > 0
  # and (patience 3, one evaluation) the run ends with that step's model scored on the test split
  report = result.history[-1]
  assert report["best_step"] == result.best_step == 2 and "val_loss" in evals[0]
  np.testing.assert_allclose(report["test_mse"], evals[0]["eval_mse"], rtol=1e-6)


def test_t3_full_configs_hold_the_tslib_recipe():
  from experiments import t3_forecasting

  config = t3_forecasting.get_config()
  assert config.data.ts_dataset == "ETTh1" and config.data.ts_horizon == 96
  assert config.data.ts_lookback == 96 and config.train.global_batch_size == 32
  # 10 epochs of ceil(8449 / 32) = 265 steps; the whole val / test split (2785 windows) per eval
  assert config.train.steps == 2650 and config.train.eval_every == 265
  assert config.train.eval_steps == math.ceil(2785 / 32)
  assert config.train.early_stopping_patience == 3  # TSLib's --patience
  assert config.optimizer.learning_rate == 1e-4 and config.optimizer.weight_decay == 0.0
  traffic = t3_forecasting.get_config("dataset=traffic,horizon=720")
  assert traffic.model.input_dim == traffic.model.output_dim == 862
  assert traffic.model.horizon == 720
  with pytest.raises(ValueError, match="horizon='100' is unknown"):
    t3_forecasting.get_config("horizon=100")


SMALL_ROWS = 400  # a ratio dataset: 280 train / 40 val / 80 test rows


def write_small_series(folder, rows=SMALL_ROWS):
  """traffic.csv with 2 variables: a clean 16-step sine wave in the train rows, noise after.

  With lookback 32 and horizon 8: 241 train, 33 val and 73 test windows. What the model
  learns on the train rows does not carry over to the noise, so the validation loss stops
  improving after a few steps (early stopping's test)."""
  rng = np.random.default_rng(0)
  t = np.arange(rows)
  train_end = int(rows * 0.7)
  values = np.stack([np.sin(2 * np.pi * t / 16), np.cos(2 * np.pi * t / 16)], axis=1)
  values[train_end:] = rng.normal(size=(rows - train_end, 2))
  return write_csv(folder / "traffic.csv", rows, ("a", "OT"), value=lambda r, j: values[r, j])


def small_config(folder, **train_fields):
  """The T3 runlocal model (width 16, 1 block, lookback 32) on write_small_series, horizon 8,
  batches of 8, eval_steps enough for a whole split."""
  from experiments import t3_forecasting

  config = t3_forecasting.get_config("dataset=traffic,runlocal")
  config.data.train_path = str(folder)
  config.data.ts_horizon = 8
  config.model.update(input_dim=2, output_dim=2, horizon=8)
  config.train.update(global_batch_size=8, eval_steps=100, log_every=100, **train_fields)
  return config


def windows_of(folder, split):
  source = timeseries.TimeSeriesSource(str(folder), "traffic", split=split, lookback=32, horizon=8)
  examples = [source[i] for i in range(len(source))]
  return np.stack([e["inputs"] for e in examples]), np.stack([e["targets"] for e in examples])


def test_one_pass_batches_give_each_process_equal_batches_and_each_window_once(tmp_path):
  from titans_jax.data import pipeline

  write_small_series(tmp_path)
  source = timeseries.TimeSeriesSource(str(tmp_path), "traffic", split="val", lookback=32,
                                       horizon=8)
  assert len(source) == 33
  # Given 33 windows, global batches of 8 over 2 processes (4 rows each)
  shards = [pipeline.make_batches(source, global_batch_size=8, seed=0, shuffle=False,
                                  one_pass=True, process_index=p, process_count=2)
            for p in range(2)]
  # Then both processes get ceil(33 / 8) = 5 batches
  assert len(shards[0]) == len(shards[1]) == 5
  batches = [[shard[j] for j in range(5)] for shard in shards]
  # and the rows of weight 1, in global order, are the 33 windows once each
  kept = [batch["inputs"][k] for j in range(5) for batch in (batches[0][j], batches[1][j])
          for k in range(4) if batch["row_weight"][k] == 1.0]
  np.testing.assert_array_equal(np.stack(kept), windows_of(tmp_path, "val")[0])
  # The last global batch: window 32 and 7 padding rows (real windows, weight 0)
  np.testing.assert_array_equal(batches[0][4]["row_weight"], [1, 0, 0, 0])
  np.testing.assert_array_equal(batches[1][4]["row_weight"], [0, 0, 0, 0])
  assert batches[1][4]["inputs"].shape == (4, 32, 2)


def test_evaluation_scores_each_test_window_exactly_once(tmp_path):
  from flax import nnx

  from titans_jax import train

  # Given 73 test windows in batches of 8 (9 full batches and one of a single window)
  folder = tmp_path / "data"
  write_small_series(folder)
  config = small_config(folder, steps=1, eval_every=1, checkpoint_every=1,
                        early_stopping_patience=0)
  result = train.train_and_evaluate(config, str(tmp_path / "work"))
  (row,) = [r for r in result.history if "eval_mse" in r]
  # Then eval_mse / eval_mae are the plain means over the 73 windows of the model's forecasts
  inputs, targets = windows_of(folder, "test")
  assert len(inputs) == 73
  model, _ = nnx.merge(result.graphdef, result.state)
  error = np.asarray(nnx.jit(lambda m, x: m(x))(model, inputs)) - targets  # jit: faster than eager
  np.testing.assert_allclose(row["eval_mse"], np.mean(error**2), rtol=1e-5)
  np.testing.assert_allclose(row["eval_mae"], np.mean(np.abs(error)), rtol=1e-5)
  # (the old wrap-around counted windows 0..6 twice: another number)
  wrapped = np.concatenate([error, error[:7]])
  assert abs(np.mean(wrapped**2) / row["eval_mse"] - 1) > 1e-4


def test_t3_early_stopping_reports_the_best_step_and_resumes_its_counter(tmp_path):
  import os
  import shutil

  from titans_jax import metrics, train

  # Given TSLib's patience 3, an evaluation every step, and only 2 latest checkpoints kept
  folder = tmp_path / "data"
  write_small_series(folder)
  config = small_config(folder, steps=30, eval_every=1, checkpoint_every=100,
                        keep_checkpoints=2, early_stopping_patience=3)
  result = train.train_and_evaluate(config, str(tmp_path / "a"))
  evals = {r["step"]: r for r in result.history if "val_loss" in r}
  best, stop = result.best_step, result.step
  # Then training stopped early, 3 evaluations after the best validation loss
  assert stop < 30 and stop == best + 3 == max(evals)
  assert sorted(evals) == list(range(1, stop + 1))
  assert evals[best]["val_loss"] == min(r["val_loss"] for r in evals.values())
  assert all(evals[s]["val_loss"] > evals[best]["val_loss"] for s in range(best + 1, stop + 1))
  # and the last row reports the test metrics of the best step's model (its checkpoint)
  report = result.history[-1]
  assert report["step"] == stop and report["best_step"] == best
  np.testing.assert_allclose([report["test_mse"], report["test_mae"]],
                             [evals[best]["eval_mse"], evals[best]["eval_mae"]], rtol=1e-6)
  assert metrics.read_jsonl(tmp_path / "a" / "metrics.jsonl")[-1] == {
      k: float(v) for k, v in report.items()}
  # The stop is a clean end (its step saved); the best step outlives keep_checkpoints=2
  assert sorted(int(s) for s in os.listdir(tmp_path / "a" / "checkpoints")) == [
      best, stop - 1, stop]

  # Given the same run preempted after step stop - 1 (its latest checkpoint), then resumed
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints" / str(stop))
  resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
  # Then it kept its counter (2 evaluations without a better loss): it stops at the same step
  assert resumed.step == stop and resumed.best_step == best
  assert [r["step"] for r in resumed.history if "val_loss" in r] == [stop]
  np.testing.assert_allclose(resumed.history[-1]["test_mse"], report["test_mse"], rtol=1e-6)
