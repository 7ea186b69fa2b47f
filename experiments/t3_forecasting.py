"""Table 3: long-term forecasting (Titans section 5.4), MSE / MAE, LMM in place of Mamba in SiMBA.

The paper reports, per dataset, MSE and MAE averaged over the four horizons 96, 192,
336 and 720 (ETTh1: Titans 0.420 / 0.421, SiMBA 0.441 / 0.432; the rest: see the
paper). One run here is one (dataset, horizon) cell: the test_mse / test_mae of the run's
last metrics row (the best-validation model, below); the Table 3 entry is the mean of the
four horizons' cells.

Model (titans_jax/models/forecast.py, its docstring says what is SiMBA's and what is
ours): SiMBA blocks [LayerNorm -> LMM -> residual -> LayerNorm -> EinFFT -> residual]
over PatchTST-style patches (16 / 8) of each variable's lookback, instance
normalisation, a linear head to the horizon. Sizes are ours (the papers give none that
we know of): width 128, 2 blocks, 4 heads of 32, memory depth 2, memory chunk 4 (a
window has 12 patches; chunks of 4 let the memory update 3 times within it).

Data (titans_jax/data/timeseries.py): the Time-Series-Library protocol, features "M",
lookback 96, StandardScaler fitted on the train split, ETT 12 / 4 / 4 months, the
others 70 / 10 / 20%; evaluation on the test split.

Training, TSLib's long-term-forecast defaults where we keep them: Adam (no weight
decay, b2 0.999), lr 1e-4, batch 32, 10 epochs (steps = 10 x ceil(train windows / 32)),
and TSLib's early stopping (exp_long_term_forecasting.py train(), utils/tools.py
EarlyStopping, --patience 3): after every epoch the val and test splits are scored, a
val loss <= the best so far saves the model as the best, 3 epochs in a row without one
stop training, and the best-validation model is tested at the end
(`train.early_stopping_patience = 3`; titans_jax/train.py keeps that step's Orbax
checkpoint and writes best_step, best_val_loss, test_mse, test_mae as the last
metrics.jsonl row; a resumed run keeps the counter, saved with each checkpoint). Every
split is scored in one pass, each window once (the last batch padded with rows of weight
0), as TSLib's loaders (drop_last=False) read them. TSLib's val loss averages its
per-batch MSEs; ours is the mean over windows (the same but for the last, partial
batch's weight). Ours, different from TSLib: a cosine decay to 0 over the 10 epochs in
place of TSLib's halving of the lr every epoch ("type1"); gradient clipping at 1.0
(TSLib: none).

  # 1. Data: the Autoformer / Time-Series-Library "all_six_datasets" folder (Google Drive
  #    link in the README of github.com/thuml/Time-Series-Library or thuml/Autoformer),
  #    unzipped as ./dataset/{ETT-small,electricity,traffic,weather}/*.csv
  # 2. Train one cell (here ETTh1, horizon 96; scores the val and test splits every epoch,
  #    stops early as TSLib, then scores the test split with the best-validation model)
  python -m titans_jax.main --config=experiments/t3_forecasting.py:dataset=etth1,horizon=96 \\
      --workdir=/tmp/t3_etth1_96 --config.data.train_path=./dataset
  # 3. The cell: the run's last metrics row (best_step, test_mse, test_mae)
  tail -n 1 /tmp/t3_etth1_96/metrics.jsonl
  # Table 3's entry: repeat with horizon=192, 336, 720 and average the four MSEs / MAEs.
  # On a TPU pod slice (every worker runs it; the CSV folder must be readable on each; the
  # model is small, so a v5p-8 is plenty; batch 32 splits over its chips):
  for horizon in 96 192 336 720; do
    TPU_NAME=my-v5p-8 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh \\
        --config=experiments/t3_forecasting.py:dataset=etth1,horizon=$horizon \\
        --workdir=/gcs/BUCKET/titans/t3_etth1_$horizon --config.data.train_path=/data/tslib/dataset
  done
  # Local smoke run (width 16, 1 block, lookback 32, a few steps, one evaluation of 4 windows):
  python -m titans_jax.main --config=experiments/t3_forecasting.py:runlocal --workdir=/tmp/t3_local \\
      --config.data.train_path=./dataset

Arguments (comma-separated after ':'): dataset=etth1|etth2|ettm1|ettm2|ecl|traffic|weather
(default etth1), horizon=96|192|336|720 (default 96), steps=N (shortened run), runlocal.
"""

import dataclasses
import math

from experiments import _lm
from titans_jax import configs
from titans_jax.data import timeseries
from titans_jax.models import ModelConfig, forecast

ARGUMENTS = ("dataset", "horizon", "steps", "runlocal")
DATASETS = tuple(timeseries.DATASETS)
HORIZONS = tuple(str(h) for h in timeseries.HORIZONS)
LOOKBACK = timeseries.DEFAULT_LOOKBACK  # TSLib's seq_len 96
GLOBAL_BATCH = 32  # TSLib's --batch_size
EPOCHS = 10  # TSLib's --train_epochs
PATIENCE = 3  # TSLib's --patience (early stopping on the val loss, checked every epoch)
MODEL = dict(width=128, num_layers=2, num_heads=4, memory_chunk=4)
TINY = dict(width=16, num_layers=1, num_heads=2, memory_chunk=4)
TINY_LOOKBACK = 32
TINY_BATCH = 4


def windows(dataset: str, split: str, *, lookback: int, horizon: int) -> int:
  """Windows of a split at the dataset's known size (epochs -> steps, evaluation batches)."""
  info = timeseries.DATASETS[dataset]
  start, end = timeseries.split_borders(info.split_rule, info.rows, lookback)[split]
  return end - start - lookback - horizon + 1


def model_fields(dataset: str, *, lookback: int, horizon: int, sizes: dict) -> dict:
  """The model section: the LMM's ModelConfig fields + the forecaster's (models/forecast.py)."""
  variables = timeseries.DATASETS[dataset].variables
  # No persistent tokens: the forecaster runs the LMM block alone (see its docstring).
  lmm = ModelConfig(variant="lmm", input_dim=variables, output_dim=variables, num_persistent=0,
                    **sizes)
  fields = dataclasses.asdict(lmm)
  fields.update(forecast.FORECAST_DEFAULTS, lookback=lookback, horizon=horizon)
  forecast.forecast_config(fields)  # validated here, before any run starts
  return fields


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  _lm.check_arguments(args, ARGUMENTS, "t3_forecasting.py")
  dataset = _lm.choice(args, "dataset", DATASETS, "ETTh1")
  horizon = int(_lm.choice(args, "horizon", HORIZONS, "96"))
  runlocal = bool(args.get("runlocal"))
  lookback = TINY_LOOKBACK if runlocal else LOOKBACK
  fields = model_fields(dataset, lookback=lookback, horizon=horizon,
                        sizes=TINY if runlocal else MODEL)
  config = configs.base_config(model=fields)
  config.model_builder = "titans_jax.models.forecast:build_forecaster"
  config.data.source = "timeseries"
  config.data.train_path = timeseries.DEFAULT_FOLDER
  config.data.ts_dataset = dataset
  config.data.ts_lookback = lookback
  config.data.ts_horizon = horizon
  config.data.seq_len = lookback  # time steps per example (for tokens/s)
  config.train.objective = "forecast"

  epoch = math.ceil(windows(dataset, "train", lookback=LOOKBACK, horizon=horizon) / GLOBAL_BATCH)
  steps = _lm.positive_int(args, "steps", EPOCHS * epoch)
  config.train.steps = steps
  config.train.global_batch_size = GLOBAL_BATCH
  config.train.log_every = 50
  config.train.eval_every = min(epoch, steps)  # the val and test splits after every epoch
  # Enough batches for either split whole (one pass: each window once, the last batch padded).
  config.train.eval_steps = math.ceil(max(
      windows(dataset, split, lookback=LOOKBACK, horizon=horizon) for split in ("val", "test"))
      / GLOBAL_BATCH)
  config.train.checkpoint_every = config.train.eval_every
  config.train.early_stopping_patience = PATIENCE
  config.optimizer.learning_rate = 1e-4
  config.optimizer.weight_decay = 0.0  # Adam, as TSLib
  config.optimizer.b2 = 0.999
  config.optimizer.clip_norm = 1.0
  config.optimizer.warmup_steps = 0
  config.optimizer.end_lr_ratio = 0.0
  if runlocal:
    shrink(config, steps=_lm.positive_int(args, "steps", 4))
  return config


def shrink(config, *, steps: int):
  """runlocal: tiny model (above), lookback 32, a few steps of 4 windows, one evaluation (val
  and test, one batch each; then the early-stopping report of that step).

  No data is generated here: point data.train_path at a folder with the dataset's CSV
  (tests write a fake ETTh1.csv of the real size).
  """
  config.train.steps = min(steps, 4)
  config.train.global_batch_size = TINY_BATCH
  config.train.log_every = 1
  config.train.eval_every = config.train.steps
  config.train.eval_steps = 1
  config.train.checkpoint_every = config.train.steps
  config.optimizer.learning_rate = 1e-3
  return config
