"""Builds the Grain source named by an experiment's `data` config section."""

from __future__ import annotations

from titans_jax.data.sources import BYTE_VOCAB_SIZE, ByteTextSource, RandomTokenSource, TfdsTextSource
from titans_jax.data.tasks import (HAYSTACKS, MQAR_FILLERS, NIAH_TASKS, MqarSource,
                                   NeedleInHaystackSource)

SOURCES = ("random", "text", "tfds", "niah", "mqar", "packed", "babilong", "genomic",
           "hf_tfds", "timeseries")
# Sources whose examples carry a class `label` (train.objective="classification").
LABELLED_SOURCES = ("genomic",)
# Sources of continuous windows with float targets (train.objective="forecast", Table 3).
FORECAST_SOURCES = ("timeseries",)
# Finite splits evaluated in one pass, every example exactly once (Tables 3 and 4 score the
# whole test split): pipeline.make_batches(one_pass=True) pads the last batch with rows of
# row_weight 0 instead of wrapping round to the split's start.
ONE_PASS_EVAL_SOURCES = LABELLED_SOURCES + FORECAST_SOURCES
# Sources with a validation split apart from the evaluated (test) split: make_source(split="val")
# (train.early_stopping_patience selects on it, as the Time-Series-Library does).
VALIDATION_SOURCES = ("timeseries",)


def _split_seed(data_config, split: str) -> int:
  # Evaluation draws other records than training from the same synthetic task.
  return int(data_config.seed) + (0 if split == "train" else 1_000_003)


def _split_path(data_config, split: str) -> str:
  """data.train_path for training; data.eval_path (falling back to it) for evaluation."""
  return data_config.train_path if split == "train" else (data_config.eval_path or
                                                          data_config.train_path)


def _require_choice(field: str, value, choices: tuple[str, ...]):
  if value not in choices:
    raise ValueError(f"{field}={value!r} is unknown; expected one of {choices}")


def _make_niah(data_config, *, seed: int, seq_len: int) -> NeedleInHaystackSource:
  _require_choice("data.task", data_config.task, NIAH_TASKS)
  _require_choice("data.haystack", data_config.haystack, HAYSTACKS)
  depth = float(data_config.needle_depth)
  if depth != -1.0 and not 0.0 <= depth <= 1.0:
    raise ValueError(f"data.needle_depth={depth} must lie in [0, 1], or be -1.0 for a random "
                     "depth per example")
  minimum = NeedleInHaystackSource.min_seq_len(data_config.task)
  if seq_len < minimum:
    raise ValueError(f"data.seq_len={seq_len} cannot hold the needle, question and answer of "
                     f"data.task={data_config.task!r}; expected data.seq_len >= {minimum}")
  return NeedleInHaystackSource(seq_len=seq_len, task=data_config.task,
                                haystack=data_config.haystack,
                                depth=None if depth == -1.0 else depth, seed=seed)


def _make_mqar(data_config, *, seed: int, seq_len: int, vocab_size: int) -> MqarSource:
  _require_choice("data.mqar_filler", data_config.mqar_filler, MQAR_FILLERS)
  pairs, queries = int(data_config.mqar_pairs), int(data_config.mqar_queries)
  if pairs < 1 or not 0 <= queries <= pairs:
    raise ValueError(f"data.mqar_pairs={pairs} must be >= 1 and data.mqar_queries={queries} in "
                     f"[0, data.mqar_pairs] (0 queries every pair)")
  if vocab_size < 2 * pairs + 1:
    raise ValueError(f"data.mqar_pairs={pairs} needs distinct key tokens and separate value "
                     f"tokens, but model.vocab_size is {vocab_size}; expected model.vocab_size "
                     f">= {2 * pairs + 1}")
  return MqarSource(seq_len=seq_len, num_pairs=pairs, num_queries=queries or None,
                    vocab_size=vocab_size, filler=data_config.mqar_filler, seed=seed)


def _make_packed(data_config, *, split: str, seq_len: int, vocab_size: int):
  from titans_jax.data.packing import PackedSource

  pattern = _split_path(data_config, split)
  if not pattern:
    raise ValueError("data.source='packed' needs data.train_path: the shards the pretokenize tool "
                     "wrote (e.g. 'corpus/train-*.array_record')")
  source = PackedSource(pattern, seq_len=seq_len,
                        with_segments=bool(getattr(data_config, "reset_at_documents", False)))
  needed = int(source.metadata.get("vocab_size", 0))
  if needed > vocab_size:
    raise ValueError(f"the packed shards use token ids up to {needed - 1} (their packing.json) but "
                     f"model.vocab_size is {vocab_size}; expected model.vocab_size >= {needed}")
  return source


def _make_babilong(data_config, *, split: str, seq_len: int):
  from titans_jax.data.babilong import DEFAULT_TASKS, BabilongSource

  root = _split_path(data_config, split)
  if not root:
    raise ValueError("data.source='babilong' needs data.train_path: a folder of "
                     "<length>/<task>.jsonl files (e.g. RMT-team/babilong-train-5k-samples "
                     "written out as JSON lines; see titans_jax/data/babilong.py)")
  return BabilongSource(root, seq_len=seq_len,
                        tasks=data_config.get("babilong_tasks", ",".join(DEFAULT_TASKS)),
                        lengths=data_config.get("babilong_lengths", "0k"),
                        prompt=data_config.get("babilong_prompt", "plain"),
                        truncate=bool(data_config.get("babilong_truncate", False)))


def _genomic_root(data_config, split: str) -> str:
  root = _split_path(data_config, split)
  if not root:
    raise ValueError("data.source='genomic' needs data.train_path: the folder genomic_benchmarks "
                     "downloads into (default '~/.genomic_benchmarks'), holding "
                     "<data.genomic_dataset>/{train,test}/<class>/*.txt")
  return root


def class_names(data_config) -> tuple[str, ...]:
  """The classes of a labelled source (its training split), to check the model's head."""
  if data_config.source == "genomic":
    from titans_jax.data import genomic

    return genomic.class_names(_genomic_root(data_config, "train"),
                               getattr(data_config, "genomic_dataset", ""), "train")
  raise ValueError(f"data.source={data_config.source!r} gives no class labels; expected one of "
                   f"{LABELLED_SOURCES} for train.objective='classification'")


def _make_genomic(data_config, *, split: str, seq_len: int, vocab_size: int):
  from titans_jax.data import genomic

  if vocab_size < genomic.GENOMIC_VOCAB_SIZE:
    raise ValueError(f"data.source='genomic' uses token ids 0..{genomic.GENOMIC_VOCAB_SIZE - 1} "
                     f"(pad + {genomic.BASES}) but model.vocab_size is {vocab_size}; expected "
                     f"model.vocab_size >= {genomic.GENOMIC_VOCAB_SIZE}")
  dataset = getattr(data_config, "genomic_dataset", "")
  # GenomicBenchmarks has train and test splits only; evaluation reads test (as HyenaDNA).
  source = genomic.GenomicSource(_genomic_root(data_config, split), dataset,
                                 split="train" if split == "train" else "test", seq_len=seq_len)
  if split != "train":
    trained = genomic.class_names(_genomic_root(data_config, "train"), dataset, "train")
    if source.classes != trained:
      raise ValueError(f"the test classes {list(source.classes)} of {dataset!r} differ from its "
                       f"train classes {list(trained)}; expected the same class folders in both")
  return source


# make_source's split -> the Time-Series-Library split: evaluation reads test (Table 3's
# numbers are test MSE / MAE); "val" is there for callers that want TSLib's validation.
_TIMESERIES_SPLITS = {"train": "train", "eval": "test", "val": "val", "test": "test"}


def timeseries_settings(data_config) -> dict:
  """folder, dataset, lookback, horizon of data.source='timeseries' (Table 3)."""
  from titans_jax.data import timeseries

  folder = data_config.train_path
  if not folder:
    raise ValueError("data.source='timeseries' needs data.train_path: the folder holding the "
                     "Time-Series-Library CSVs (e.g. ./dataset with ETT-small/ETTh1.csv)")
  return dict(folder=folder, dataset=timeseries.dataset_name(data_config.get("ts_dataset", "")),
              lookback=int(data_config.get("ts_lookback", timeseries.DEFAULT_LOOKBACK)),
              horizon=int(data_config.get("ts_horizon", 96)))


def timeseries_variables(data_config) -> tuple[str, ...]:
  """The variables of the configured CSV (its header only), to check the model's width."""
  from titans_jax.data import timeseries

  settings = timeseries_settings(data_config)
  return timeseries.read_header(timeseries.find_csv(settings["folder"], settings["dataset"]))


def _make_timeseries(data_config, *, split: str):
  from titans_jax.data import timeseries

  if split not in _TIMESERIES_SPLITS:
    raise ValueError(f"split={split!r} is unknown; expected one of {tuple(_TIMESERIES_SPLITS)}")
  return timeseries.TimeSeriesSource(split=_TIMESERIES_SPLITS[split],
                                     **timeseries_settings(data_config))


def make_source(data_config, *, split: str, vocab_size: int):
  """split: "train" or "eval" (data.source="timeseries" also "val", "test"). Raises ValueError
  for unknown or unreadable data."""
  kind = data_config.source
  seq_len = int(data_config.seq_len)
  if getattr(data_config, "reset_at_documents", False) and kind != "packed":
    raise ValueError(f"data.reset_at_documents=True needs document boundaries, which only "
                     f"data.source='packed' records; got data.source={kind!r}")
  if seq_len < 1:
    raise ValueError(f"data.seq_len must be >= 1, got {seq_len}")
  if kind == "random":
    return RandomTokenSource(vocab_size=vocab_size, seq_len=seq_len,
                             seed=_split_seed(data_config, split))
  if kind == "mqar":
    return _make_mqar(data_config, seed=_split_seed(data_config, split), seq_len=seq_len,
                      vocab_size=vocab_size)
  if kind in ("text", "tfds", "niah", "babilong") and vocab_size < BYTE_VOCAB_SIZE:
    raise ValueError(f"data.source={kind!r} gives byte tokens (0..255) but model.vocab_size is "
                     f"{vocab_size}; expected model.vocab_size >= {BYTE_VOCAB_SIZE}")
  if kind == "text":
    paths = _split_path(data_config, split)
    if not paths:
      raise ValueError("data.source='text' needs data.train_path (a file, glob or "
                       "comma-separated list of text files)")
    return ByteTextSource(paths, seq_len=seq_len)
  if kind == "tfds":
    name_split = data_config.train_split if split == "train" else data_config.eval_split
    return TfdsTextSource(data_config.tfds_name, split=name_split, seq_len=seq_len,
                          data_dir=data_config.tfds_data_dir or None,
                          text_key=data_config.text_key)
  if kind == "niah":
    return _make_niah(data_config, seed=_split_seed(data_config, split), seq_len=seq_len)
  if kind == "packed":
    return _make_packed(data_config, split=split, seq_len=seq_len, vocab_size=vocab_size)
  if kind == "babilong":
    return _make_babilong(data_config, split=split, seq_len=seq_len)
  if kind == "hf_tfds":
    from titans_jax.data.text_sources import make_hf_tfds_source

    return make_hf_tfds_source(data_config, split=split, vocab_size=vocab_size)
  if kind == "genomic":
    return _make_genomic(data_config, split=split, seq_len=seq_len, vocab_size=vocab_size)
  if kind == "timeseries":
    return _make_timeseries(data_config, split=split)
  raise ValueError(f"data.source={kind!r} is unknown; expected one of {SOURCES}")
