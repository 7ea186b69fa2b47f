"""Long-term forecasting data (Titans Table 3) under the Time-Series-Library protocol.

Titans Table 3 replaces Mamba by the LMM inside SiMBA (Patro & Agneeswaran 2024) and
reports MSE / MAE on ETTh1, ETTh2, ETTm1, ETTm2, ECL, Traffic and Weather; those
numbers come from the Time-Series-Library (TSLib, thuml) setup that SiMBA follows.
This module rebuilds TSLib's data side (`data_provider/data_loader.py`:
`Dataset_ETT_hour`, `Dataset_ETT_minute`, `Dataset_Custom`) for features "M"
(every variable in, every variable out):

- One CSV per dataset: a `date` column, then the variables (the Autoformer / TSLib
  "all_six_datasets" download: ETT-small/ETTh1.csv, electricity/electricity.csv,
  traffic/traffic.csv, weather/weather.csv). Dates are not used (features "M" with
  no time-stamp encoding reaches the model here: the model sees values only).
- Splits by row borders. ETTh*: 12 / 4 / 4 months of hours (12*30*24 train, 4*30*24
  val, 4*30*24 test; rows after 20 months are unused, as in TSLib). ETTm*: the same
  months in 15-minute steps (x4). ECL, Traffic, Weather: 70% / 10% / 20% of the rows
  (`int(0.7 n)` train, `int(0.2 n)` test, the rest val). The val and test splits start
  `lookback` rows before their border, so their first window's target starts right at
  the border (TSLib's `border1s`).
- A StandardScaler (mean, population std; a constant column keeps scale 1) fitted on
  the train rows only and applied to every split; MSE / MAE are measured on these
  scaled values, as TSLib reports them.
- Window i of a split: `inputs` = rows [i, i + lookback), `targets` = rows
  [i + lookback, i + lookback + horizon) (TSLib's `seq_x` and the last pred_len rows of
  `seq_y`), float32 [lookback, C] and [horizon, C]. A split of n rows has
  n - lookback - horizon + 1 windows.
- Dataset_Custom moves the target column `OT` to the last place; we do the same (the
  metrics average over all variables, so only the column order is affected).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os

import numpy as np

SPLITS = ("train", "val", "test")
DEFAULT_FOLDER = "dataset"  # TSLib's --root_path convention: ./dataset/<subfolder>/<file>.csv
HORIZONS = (96, 192, 336, 720)  # Table 3 averages these four horizons
DEFAULT_LOOKBACK = 96  # TSLib's seq_len for the long-term forecasting benchmark


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A Table 3 dataset: its CSV file, TSLib subfolder, split rule and size (as we know it)."""
  file: str
  subfolder: str
  split_rule: str  # "ett_hour", "ett_minute" (fixed month borders) or "ratio" (70/10/20)
  variables: int
  rows: int


DATASETS = {
    "ETTh1": DatasetInfo("ETTh1.csv", "ETT-small", "ett_hour", 7, 17420),
    "ETTh2": DatasetInfo("ETTh2.csv", "ETT-small", "ett_hour", 7, 17420),
    "ETTm1": DatasetInfo("ETTm1.csv", "ETT-small", "ett_minute", 7, 69680),
    "ETTm2": DatasetInfo("ETTm2.csv", "ETT-small", "ett_minute", 7, 69680),
    "ECL": DatasetInfo("electricity.csv", "electricity", "ratio", 321, 26304),
    "Traffic": DatasetInfo("traffic.csv", "traffic", "ratio", 862, 17544),
    "Weather": DatasetInfo("weather.csv", "weather", "ratio", 21, 52696),
}
_ALIASES = {"electricity": "ECL"}
TARGET = "OT"  # Dataset_Custom's default target column (moved last)
_MONTH_HOURS = 30 * 24  # TSLib's month: 30 days


def dataset_name(name: str) -> str:
  """Case-insensitive Table 3 name ('etth1' -> 'ETTh1', 'electricity' -> 'ECL')."""
  by_lower = {key.lower(): key for key in DATASETS}
  by_lower.update({alias: target for alias, target in _ALIASES.items()})
  key = str(name).strip().lower()
  if key not in by_lower:
    raise ValueError(f"data.ts_dataset={name!r} is unknown; expected one of {tuple(DATASETS)}")
  return by_lower[key]


def find_csv(folder: str, dataset: str) -> str:
  """folder/<file> or folder/<TSLib subfolder>/<file>; a ValueError says where to get it."""
  info = DATASETS[dataset_name(dataset)]
  root = os.path.expanduser(folder or "")
  candidates = [os.path.join(root, info.file), os.path.join(root, info.subfolder, info.file)]
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise ValueError(
      f"no {info.file} for data.ts_dataset={dataset!r} in data.train_path={folder!r} (looked at "
      f"{candidates}); expected the folder of the Autoformer / Time-Series-Library "
      "'all_six_datasets' download (its ETT-small/, electricity/, traffic/, weather/ subfolders "
      "or the CSV files themselves)")


def read_header(path: str) -> tuple[str, ...]:
  """The variable names of a CSV (its first line without `date`); checks the layout."""
  with open(path, newline="") as handle:
    header = next(csv.reader(handle), [])
  if not header or header[0].strip().lower() != "date":
    raise ValueError(f"{path!r} starts with columns {header[:3]}; expected a 'date' column first, "
                     "then one column per variable (the TSLib CSV layout)")
  if len(header) < 2:
    raise ValueError(f"{path!r} has a date column but no variables; expected date,<var1>,...")
  return tuple(name.strip() for name in header[1:])


@functools.lru_cache(maxsize=4)
def read_csv(path: str) -> tuple[tuple[str, ...], np.ndarray]:
  """(variable names, values [rows, C] float64), with OT moved last (Dataset_Custom).

  Cached: the train and eval sources of one run read the file once (Traffic is ~130 MB).
  """
  names = read_header(path)
  try:
    values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, len(names) + 1),
                        dtype=np.float64, ndmin=2)
  except ValueError as error:
    raise ValueError(f"cannot read {path!r} as numbers after its date column: {error}") from None
  if TARGET in names:  # Dataset_Custom: cols = [date] + others + [target]
    order = [i for i, name in enumerate(names) if name != TARGET] + [names.index(TARGET)]
    names, values = tuple(names[i] for i in order), values[:, order]
  values.setflags(write=False)
  return names, values


def split_borders(split_rule: str, rows: int, lookback: int) -> dict[str, tuple[int, int]]:
  """split -> (first row, end row) of its windows, TSLib's border1s / border2s."""
  if split_rule in ("ett_hour", "ett_minute"):
    step = 1 if split_rule == "ett_hour" else 4  # ETTm: 4 steps of 15 minutes per hour
    train, val = 12 * _MONTH_HOURS * step, 4 * _MONTH_HOURS * step
    ends = (train, train + val, train + 2 * val)
  elif split_rule == "ratio":
    train, test = int(rows * 0.7), int(rows * 0.2)
    ends = (train, rows - test, rows)
  else:
    raise ValueError(f"split_rule={split_rule!r} is unknown; expected 'ett_hour', 'ett_minute' "
                     "or 'ratio'")
  starts = (0, ends[0] - lookback, ends[1] - lookback)
  return dict(zip(SPLITS, zip(starts, ends)))


def check_windows(borders: dict, *, rows: int, lookback: int, horizon: int, where: str) -> None:
  """Every split holds >= 1 window and lies inside the file, or a ValueError says how short."""
  if borders["test"][1] > rows:
    raise ValueError(f"{where} has {rows} rows but its test split ends at row "
                     f"{borders['test'][1]}; expected the full dataset (the series is too short)")
  for split, (start, end) in borders.items():
    if start < 0 or end - start < lookback + horizon:
      raise ValueError(
          f"{where}: the {split} split (rows {start}..{end}) is too short for one window of "
          f"lookback {lookback} + horizon {horizon}; expected a longer series or a smaller "
          "data.ts_lookback / data.ts_horizon")


@dataclasses.dataclass(frozen=True)
class StandardScaler:
  """sklearn's StandardScaler as TSLib uses it: fitted on the train rows only."""
  mean: np.ndarray
  scale: np.ndarray

  @classmethod
  def fit(cls, rows: np.ndarray) -> "StandardScaler":
    scale = rows.std(axis=0)  # population std (ddof 0), as sklearn
    return cls(rows.mean(axis=0), np.where(scale == 0.0, 1.0, scale))

  def transform(self, values: np.ndarray) -> np.ndarray:
    return (values - self.mean) / self.scale

  def inverse_transform(self, values: np.ndarray) -> np.ndarray:
    return values * self.scale + self.mean


class TimeSeriesSource:
  """One split of a Table 3 dataset as forecasting windows (Grain random access).

  Example: {"inputs": [lookback, C] float32, "targets": [horizon, C] float32}, both
  standardised by the train split's scaler (`self.scaler` maps back).
  """

  def __init__(self, folder: str, dataset: str, *, split: str, lookback: int = DEFAULT_LOOKBACK,
               horizon: int = 96):
    if split not in SPLITS:
      raise ValueError(f"split={split!r} is unknown; expected one of {SPLITS}")
    for name, value in (("data.ts_lookback", lookback), ("data.ts_horizon", horizon)):
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be an int >= 1 (e.g. 96)")
    self.dataset = dataset_name(dataset)
    self.split, self.lookback, self.horizon = split, int(lookback), int(horizon)
    self.path = find_csv(folder, self.dataset)
    self.columns, values = read_csv(self.path)
    info = DATASETS[self.dataset]
    self.borders = split_borders(info.split_rule, values.shape[0], self.lookback)
    check_windows(self.borders, rows=values.shape[0], lookback=self.lookback,
                  horizon=self.horizon, where=self.path)
    train_start, train_end = self.borders["train"]
    self.scaler = StandardScaler.fit(values[train_start:train_end])
    start, end = self.borders[split]
    self.data = self.scaler.transform(values[start:end]).astype(np.float32)

  @property
  def num_variables(self) -> int:
    return len(self.columns)

  def __len__(self) -> int:
    return self.data.shape[0] - self.lookback - self.horizon + 1

  def __getitem__(self, index: int) -> dict:
    i = int(index)
    if not 0 <= i < len(self):
      raise IndexError(f"window {index} of {len(self)} in the {self.split} split")
    middle = i + self.lookback
    return {"inputs": self.data[i:middle], "targets": self.data[middle:middle + self.horizon]}
