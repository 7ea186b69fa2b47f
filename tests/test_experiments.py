"""The paper-table configs (T1, T2, B, T3, T4, T5, F7, F9): every documented argument loads
and holds the paper's recipe; bad arguments fail clearly; each docstring shows its TPU
command; each training config's runlocal trains end to end through titans_jax.main (T3,
T4 and BABILong on generated data, in tests/data_pipeline/)."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
  """An experiment file as titans_jax.main loads it (by path, not as a package module)."""
  spec = importlib.util.spec_from_file_location(f"config_{name}",
                                                os.path.join(ROOT, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


T1, T2, T5, F7, F9 = (load(n) for n in ("t1_language_modeling", "t2_sniah", "t5_ablations",
                                        "f7_memory_depth", "f9_throughput"))
T3, T4, BABILONG = (load(n) for n in ("t3_forecasting", "t4_dna", "babilong_mac"))
# Every paper-table config and the small run the suite trains end to end (here, or in
# tests/data_pipeline/test_{timeseries,genomic,babilong_source}.py on generated data).
PAPER_CONFIGS = ("t1_language_modeling", "t2_sniah", "babilong_mac", "t3_forecasting", "t4_dna",
                 "t5_ablations", "f7_memory_depth", "f9_throughput")


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_every_docstring_shows_a_tpu_command_and_a_small_run(name):
  doc = load(name).__doc__
  # A pod launch for training configs; F9 measures one host, its TPU VM command.
  assert ("launch/tpu_pod.sh" in doc) or (name == "f9_throughput" and "tpu-vm ssh" in doc), name
  assert f"experiments/{name}.py:" in doc or f"experiments/{name}.py " in doc
  small = "--quick" if name == "f9_throughput" else "runlocal"
  assert small in doc, name


@pytest.mark.parametrize("dataset", T3.DATASETS)
def test_t3_has_one_config_per_dataset_and_horizon(dataset):
  variables = {"ETTh1": 7, "ETTh2": 7, "ETTm1": 7, "ETTm2": 7, "ECL": 321, "Traffic": 862,
               "Weather": 21}
  assert set(T3.DATASETS) == set(variables)
  assert dataset.lower() in T3.__doc__.lower()  # selectable as documented: dataset=etth1 ...
  for horizon in (96, 192, 336, 720):
    config = T3.get_config(f"dataset={dataset.lower()},horizon={horizon}")
    assert config.data.ts_dataset == dataset and config.data.ts_horizon == horizon
    assert config.model.input_dim == config.model.output_dim == variables[dataset]
    assert config.data.ts_lookback == 96 and config.train.early_stopping_patience == 3
  small = T3.get_config(f"dataset={dataset},runlocal")
  assert small.data.ts_dataset == dataset and small.model.width == 16


@pytest.mark.parametrize("dataset", T4.DATASETS)
def test_t4_has_one_config_per_dataset(dataset):
  assert set(T4.DATASETS) == set(T4.SPLITS) and len(T4.DATASETS) == 5
  assert dataset in T4.__doc__
  classes, train_size, _, seq_len = T4.SPLITS[dataset]
  for model in T4.MODELS:
    config = T4.get_config(f"dataset={dataset},model={model}")
    assert config.data.genomic_dataset == dataset and config.model.variant == model
    assert config.model.output_dim == classes and config.data.seq_len == seq_len
    assert config.train.steps == 100 * math.ceil(train_size / 128)  # HyenaDNA: 100 epochs
  small = T4.get_config(f"dataset={dataset},runlocal")
  assert small.data.genomic_dataset == dataset and small.model.output_dim == classes


def test_babilong_is_a_small_mac_fine_tuned_on_qa1_to_qa5():
  config = BABILONG.get_config()
  assert config.model.variant == "mac" and config.data.source == "babilong"
  assert config.data.babilong_tasks == "qa1,qa2,qa3,qa4,qa5" and config.train.steps == 10_000
  assert BABILONG.get_config("steps=20").train.steps == 20
  small = BABILONG.get_config("runlocal")
  assert small.model.width == 32 and small.train.steps == 4


def test_t1_default_is_the_760m_mac_with_the_paper_recipe():
  config = T1.get_config()
  # Spec section 4: 0.5M tokens per batch of 4096-token rows, 30B tokens, 1B warmup
  assert config.model.variant == "mac" and config.model.vocab_size == 32000
  assert config.data.seq_len == 4096 and config.train.global_batch_size == 128
  tokens_per_batch = config.data.seq_len * config.train.global_batch_size
  assert tokens_per_batch == 2**19  # "0.5M"
  assert config.train.steps == math.ceil(30e9 / tokens_per_batch) == 57221
  assert config.optimizer.warmup_steps == math.ceil(1e9 / tokens_per_batch) == 1908
  assert config.optimizer.learning_rate == 4e-4 and config.optimizer.weight_decay == 0.1
  assert config.optimizer.clip_norm == 1.0 and config.data.source == "packed"


@pytest.mark.parametrize("arguments, variant, steps", [
    ("size=170M", "mac", 28611), ("size=340m", "mac", 28611), ("size=400M", "mac", 28611),
    ("model=lmm", "lmm", 57221), ("model=mag", "mag", 57221), ("model=mal", "mal", 57221),
    ("model=transformer", "transformer", 57221), ("model=swa", "swa", 57221),
    ("model=ttt", "lmm", 57221), ("model=deltanet", "lmm", 57221)])
def test_t1_every_size_and_model_loads(arguments, variant, steps):
  config = T1.get_config(arguments)
  assert config.model.variant == variant and config.train.steps == steps  # 15B / 30B tokens
  assert config.optimizer.warmup_steps == 1908


def test_t1_records_the_tokenizer_and_shortens_runs():
  config = T1.get_config("tokenizer=/models/llama2/tokenizer.model,steps=300")
  assert config.data.tokenizer == "/models/llama2/tokenizer.model"
  # The warmup keeps the paper's fraction (1B of 30B tokens) of a shortened run
  assert config.train.steps == 300 and config.optimizer.warmup_steps == 10
  deltanet = T1.get_config("model=deltanet,size=170M").model
  assert deltanet.memory_chunk == 1 and not deltanet.memory_momentum


def test_t2_is_the_t1_training_config():
  for arguments in (None, "size=340M,model=swa", "runlocal"):
    assert T2.get_config(arguments).to_dict() == T1.get_config(arguments).to_dict()


@pytest.mark.parametrize("runlocal", [False, True])
def test_t5_each_ablation_changes_only_its_field(runlocal):
  suffix = ",runlocal" if runlocal else ""
  reference = T5.get_config("ablation=lmm" + suffix).model.to_dict()
  assert reference["variant"] == "lmm"
  for ablation, changes in T5.ABLATIONS.items():
    model = T5.get_config(f"ablation={ablation}{suffix}").model.to_dict()
    changed = {k: v for k, v in model.items() if reference[k] != v}
    assert changed == changes, ablation
  assert reference["memory_depth"] == 2 and reference["num_persistent"] == 4
  for architecture in ("mac", "mag", "mal"):
    config = T5.get_config(f"ablation={architecture}{suffix}")
    assert config.model.variant == architecture


def test_t5_is_400m_trained_for_15b_tokens():
  config = T5.get_config()
  assert config.model.width == 1152 and config.train.steps == 28611


def test_f7_depths_change_only_the_memory_depth():
  reference = F7.get_config().model.to_dict()
  assert reference["variant"] == "lmm" and reference["width"] == 768  # 170M
  for depth in (1, 2, 3, 4):
    model = F7.get_config(f"depth={depth}").model.to_dict()
    assert {k: v for k, v in model.items() if reference[k] != v} == (
        {} if depth == 2 else {"memory_depth": depth})
  assert F7.get_config("depth=4,size=760M").model.width == 1536


def test_f9_settings_load():
  small, paper = F9.get_config(), F9.get_config("size=170M")
  assert list(small.models) == ["transformer", "swa", "lmm", "mac", "mag", "mal"]
  assert list(small.lengths) == [1024, 2048, 4096, 8192] and small.size == ""
  assert paper.size == "170M" and paper.model["dtype"] == "bfloat16"


@pytest.mark.parametrize("module, arguments, message", [
    (T1, "size=1B", r"size='1B' is unknown; expected one of \('170M'"),
    (T1, "model=rnn", "model='rnn' is unknown"),
    (T1, "steps=many", "steps='many' must be a positive integer"),
    (T1, "sise=170M", r"unknown argument\(s\) \['sise'\]"),
    (T2, "model=rwkv", "model='rwkv' is unknown"),
    (T5, "ablation=no_attention", "ablation='no_attention' is unknown"),
    (T5, "size=760M", r"unknown argument\(s\) \['size'\]"),
    (F7, "depth=5", "depth='5' is unknown; expected one of"),
    (F9, "size=1B", "size='1B' is unknown"),
    (T3, "dataset=exchange", "dataset='exchange' is unknown"),
    (T4, "dataset=mouse", "dataset='mouse' is unknown"),
    (BABILONG, "step=5", r"unknown argument\(s\) \['step'\]"),
    (BABILONG, "steps=0", "steps='0' must be a positive integer")])
def test_bad_arguments_raise_a_clear_value_error(module, arguments, message):
  with pytest.raises(ValueError, match=message):
    module.get_config(arguments)


RUNLOCAL = {"t1": "experiments/t1_language_modeling.py:model=mag,runlocal,steps=2",
            "t5": "experiments/t5_ablations.py:ablation=no_persistent_memory,runlocal,steps=2",
            "f7": "experiments/f7_memory_depth.py:depth=3,runlocal,steps=2"}


def test_runlocal_trains_end_to_end_through_main(tmp_path):
  # Given each training config's runlocal, started side by side (each compiles its own model)
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  children = {name: subprocess.Popen(
      [sys.executable, "-m", "titans_jax.main", f"--config={config}",
       f"--workdir={tmp_path / name}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for name, config in RUNLOCAL.items()}
  outputs = {name: child.communicate(timeout=400)[0] for name, child in children.items()}
  for name, child in children.items():
    assert child.returncode == 0, outputs[name][-3000:]
    # Then each trains its 2 steps to a finite loss and leaves a checkpoint
    metrics = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
    assert metrics[-1]["step"] == 2 and np.isfinite(metrics[-1]["loss"])
    assert "Checkpoints:" in outputs[name]
  saved = {n: json.load(open(tmp_path / n / "config.json"))["model"] for n in RUNLOCAL}
  assert saved["t1"]["variant"] == "mag" and saved["t5"]["num_persistent"] == 0
  assert saved["f7"]["memory_depth"] == 3


def test_throughput_quick_runs(tmp_path):
  done = subprocess.run(
      [sys.executable, "benchmarks/throughput.py", "--quick", "--models=swa", "--lengths=64",
       f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  (row,) = json.load(open(tmp_path / "throughput.json"))["rows"]
  assert row["error"] is None and row["tokens_per_second"] > 0
  assert "| swa | " in open(tmp_path / "throughput.md").read()
