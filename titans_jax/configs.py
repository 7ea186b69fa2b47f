"""The base experiment config and the small-run (`runlocal`) shrinker.

Experiment files in `experiments/` start from `base_config()` and override what
their paper setup needs; every field carries a one-line comment here.
"""

from __future__ import annotations

import ml_collections

from titans_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES


def model_defaults() -> dict:
  """Every ModelConfig field with its default (the models' own dataclass decides)."""
  import dataclasses

  from titans_jax.models import ModelConfig

  return {field.name: getattr(ModelConfig(), field.name) for field in dataclasses.fields(ModelConfig)}


def base_config(model: dict | None = None) -> ml_collections.ConfigDict:
  """model: the `model` section; defaults to every ModelConfig field."""
  config = ml_collections.ConfigDict()
  # Seed of parameter init and data order.
  config.seed = 0

  # The model: fields of titans_jax.models.ModelConfig (variant, sizes, memory, attention).
  config.model = ml_collections.ConfigDict(model_defaults() if model is None else model)
  # '' builds the zoo's model; 'package.module:function' a model of your own from config.model.
  config.model_builder = ""

  config.data = ml_collections.ConfigDict()
  # Source: "random" (smoke runs), "text" (local files, byte tokens), "tfds" (ArrayRecord),
  # "niah" / "mqar" (synthetic recall tasks, titans_jax/data/tasks.py), "packed" (shards of
  # python -m titans_jax.tools.pretokenize in data.train_path / data.eval_path), "babilong"
  # (BABILong fine-tuning, titans_jax/data/babilong.py; byte tokens), "genomic" (GenomicBenchmarks
  # DNA classification, titans_jax/data/genomic.py; train.objective="classification"),
  # "hf_tfds" (a Hugging Face dataset prepared as TFDS ArrayRecord, one document per example,
  # titans_jax/data/text_sources.py).
  config.data.source = "random"
  # Tokens per training example.
  config.data.seq_len = 256
  # Seed of synthetic sources.
  config.data.seed = 0
  # Packed rows (source="packed"): read every document as if alone (the memory, attention,
  # RoPE positions and conv restart at each document start). Exact when documents start on
  # the memory chunk grid (and MAC's segments): pretokenize with --align=<chunk or segment>.
  config.data.reset_at_documents = False
  # source="text": file, glob or comma-separated list for training / evaluation.
  config.data.train_path = ""
  config.data.eval_path = ""
  # source="tfds": dataset name, data_dir, splits and the text feature.
  config.data.tfds_name = ""
  config.data.tfds_data_dir = ""
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.text_key = "text"
  # source="hf_tfds": the Hugging Face dataset id and config prepared (once, with network) by
  # text_sources.prepare_huggingface_tfds / pretokenize --tfds_hf=ID:CONFIG --tfds_prepare in
  # data.tfds_data_dir, read offline from there; splits data.train_split / data.eval_split
  # (TFDS slices, e.g. 'train[:99%]' / 'train[99%:]': FineWeb-Edu has only a train split),
  # feature data.text_key. Each example is one document, tokenized by data.tokenizer when
  # read, cut / padded (no loss) to seq_len + 1; packed shards waste no padding (see there).
  # FineWeb-Edu's sample-10BT is our default subset (the paper names none).
  config.data.hf_repo_id = "HuggingFaceFW/fineweb-edu"
  config.data.hf_config = "sample-10BT"
  # The tokenizer: 'byte' (or '': bytes), 'sentencepiece:PATH', 'hf:PATH'. source="hf_tfds"
  # tokenizes with it; for "packed" it records the one the shards were made with (the zero-shot,
  # RULER and BABILong CLIs read it from the run's config).
  config.data.tokenizer = ""
  # source="niah": S-NIAH flavour "passkey" / "number" / "uuid" (RULER's PK / N / W).
  config.data.task = "passkey"
  # source="niah": haystack "noise" (one repeated paragraph) or "essay" (varied generated text).
  config.data.haystack = "noise"
  # source="niah": fraction of the haystack before the needle in [0, 1]; -1.0: random per example.
  config.data.needle_depth = -1.0
  # source="mqar": key-value pairs, queries at the end (0: every pair), filler "zeros" / "random".
  config.data.mqar_pairs = 8
  config.data.mqar_queries = 0
  config.data.mqar_filler = "random"
  # source="babilong": data.train_path / data.eval_path are folders of <length>/<task>.jsonl
  # (RMT-team/babilong-train-5k-samples / RMT-team/babilong as JSON lines); the tasks and
  # lengths mixed, comma-separated.
  config.data.babilong_tasks = "qa1,qa2,qa3,qa4,qa5"
  config.data.babilong_lengths = "0k"
  # source="babilong": "plain" ("{input}\nQuestion: {q}\nAnswer: {target}.") or "instruct"
  # (BABILong's instruction prompt); evaluate in the same format.
  config.data.babilong_prompt = "plain"
  # source="babilong": an example over seq_len + 1 bytes is an error (False) or loses its
  # oldest context bytes (True).
  config.data.babilong_truncate = False
  # source="genomic" (Table 4, titans_jax/data/genomic.py): a GenomicBenchmarks dataset name; its
  # folder <data.train_path>/<name>/{train,test}/<class>/*.txt (evaluation reads test).
  config.data.genomic_dataset = ""

  config.optimizer = ml_collections.ConfigDict()
  # Peak learning rate of AdamW (spec section 4: 4e-4).
  config.optimizer.learning_rate = 4e-4
  # Linear warmup steps, then cosine decay to end_lr_ratio x peak at train.steps.
  config.optimizer.warmup_steps = 100
  config.optimizer.end_lr_ratio = 0.1
  # Adam moments and epsilon.
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.95
  config.optimizer.eps = 1e-8
  # Decoupled weight decay on matrices only (not norms, biases, gate biases).
  config.optimizer.weight_decay = 0.1
  # Global-norm gradient clipping.
  config.optimizer.clip_norm = 1.0

  config.train = ml_collections.ConfigDict()
  # Optimizer steps.
  config.train.steps = 1000
  # Examples per optimizer step, over all processes.
  config.train.global_batch_size = 8
  # Micro-batches accumulated per step (global_batch_size must be a multiple).
  config.train.grad_accum_steps = 1
  # Loss: "lm" (next-token cross-entropy on inputs / targets / weights) or "classification"
  # (one label per row, logits mean-pooled over its real positions; model.output_dim =
  # classes; Table 4). train_step.OBJECTIVES maps each name to its loss.
  config.train.objective = "lm"
  # Console / metrics.jsonl / TensorBoard every N steps.
  config.train.log_every = 10
  # Evaluation every N steps (0: never) over eval_steps batches. The finite splits of
  # data.source="timeseries" / "genomic" (Tables 3 / 4) end sooner: one pass, every example
  # once, the last batch padded with rows of weight 0 (data.registry.ONE_PASS_EVAL_SOURCES).
  config.train.eval_every = 200
  config.train.eval_steps = 4
  # Early stopping (0: off) as the Time-Series-Library trains Table 3 (utils/tools.py
  # EarlyStopping, --patience 3): each evaluation also scores the validation split; after this
  # many evaluations in a row without a validation loss <= the best, training stops (a clean
  # end: the step is saved). The best step's checkpoint is kept besides the last
  # keep_checkpoints, and the run ends with the test metrics of that model (metrics.jsonl:
  # best_step, best_val_loss, test_*). Needs eval_every >= 1 and data.source="timeseries".
  config.train.early_stopping_patience = 0
  # Checkpoint every N steps, keeping the last keep_checkpoints; saves are asynchronous.
  config.train.checkpoint_every = 200
  config.train.keep_checkpoints = 3
  config.train.async_checkpoint = True
  # Grain prefetch threads.
  config.train.prefetch_threads = 2

  # After training: S-NIAH accuracy by context length x needle depth (titans_jax.evaluation).
  # Lengths are multiples of data.seq_len (1 = the training length); () = skipped.
  # Tuples, so the command line can set them: --config.recall_eval.length_multiples='(1, 4)'.
  config.recall_eval = ml_collections.ConfigDict()
  config.recall_eval.length_multiples = ml_collections.FieldReference((), field_type=tuple)
  config.recall_eval.depths = (0.0, 0.25, 0.5, 0.75, 1.0)
  config.recall_eval.samples = 8

  # Device mesh sizes; one may be -1 (all remaining devices).
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  # XLA's SPMD partitioner: "shardy", or "gspmd" on jax < 0.12 (titans_jax.sharding.use_partitioner).
  config.partitioner = "shardy"
  # Pin activations by their logical names too (the rules below). Off by default: on CPU,
  # XLA mis-partitions a MAC whose activations are pinned on a mesh that splits data, fsdp
  # and tensor (first-step loss 4e-3 off one device; jax 0.10 and 0.12, Shardy and GSPMD
  # alike), so training refuses that layout (train.validate_activation_constraints).
  # Parameters and inputs alone let the partitioner place activations correctly.
  config.activation_constraints = False
  # Logical axis name -> mesh axes (MaxText style).
  config.logical_axis_rules = [list(rule) for rule in DEFAULT_LOGICAL_AXIS_RULES]
  return config


def apply_runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to run in a minute on a laptop CPU (model, data and schedule)."""
  model = config.model
  model.num_layers = min(model.num_layers, 2)
  model.width = min(model.width, 64)
  model.num_heads = min(model.num_heads, 4)
  if "mlp_hidden" in model:
    model.mlp_hidden = min(model.mlp_hidden or 4 * model.width, 4 * model.width)
  config.data.seq_len = min(config.data.seq_len, 64)
  config.train.steps = min(config.train.steps, 20)
  config.train.global_batch_size = min(config.train.global_batch_size, 4)
  config.train.grad_accum_steps = 1
  config.train.log_every = 5
  config.train.eval_every = 10
  config.train.eval_steps = 1
  config.train.checkpoint_every = 10
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, 5)
  return config


def parse_arguments(text: str | None) -> dict:
  """'size=340m,runlocal' -> {'size': '340m', 'runlocal': True} (big_vision style)."""
  arguments = {}
  for item in (text or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    arguments[key.strip()] = value.strip() if value else True
  return arguments
