"""The language-model recipe shared by the Table 1 / 2 / 5 and Figure 7 configs.

Spec section 4 (the paper's recipe): FineWeb-Edu, Llama-2 tokenizer (32K vocabulary),
context 4096, AdamW with peak lr 4e-4 and cosine decay, 0.5M tokens per batch, weight
decay 0.1, gradient clip 1.0, warmup 1B tokens, 15B training tokens (170M-400M) or
30B (760M). Model sizes come from `titans_jax.models.presets`; this module only turns
token budgets into steps and fills the training sections.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from titans_jax import configs
from titans_jax.models import presets

SEQ_LEN = 4096  # paper context length
TOKENS_PER_BATCH = 2**19  # "0.5M tokens per batch" (524,288)
GLOBAL_BATCH = TOKENS_PER_BATCH // SEQ_LEN  # 128 rows of 4096 tokens
WARMUP_TOKENS = 1e9
TRAIN_TOKENS = {"170M": 15e9, "340M": 15e9, "400M": 15e9, "760M": 30e9}
SIZES = tuple(presets.SIZES)
# Table 1's rows: the zoo's variants and the two LMM-setting baselines of presets.BASELINES.
MODELS = ("lmm", "mac", "mag", "mal", "transformer", "swa", "ttt", "deltanet")
# Sliding window (SWA, MAG, MAL) and MAC segment length. Spec section 4 gives none;
# 512 is ours: a multiple of the memory chunk (16) that leaves 8 segments per 4K row,
# so MAC's memory carries most of the context. Override with --config.model.window=...
WINDOW = 512

# The tiny model of `runlocal`: seconds on a laptop CPU, same variant and code paths.
TINY = dict(vocab_size=256, width=32, num_layers=1, num_heads=2, window=16, segment_len=16)
TINY_SEQ_LEN = 64


def steps_for(tokens: float) -> int:
  """Optimizer steps that see `tokens` tokens at 0.5M tokens per step (rounded up)."""
  return math.ceil(tokens / TOKENS_PER_BATCH)


def check_arguments(args: dict, allowed: tuple[str, ...], config_name: str) -> None:
  unknown = sorted(set(args) - set(allowed))
  if unknown:
    raise ValueError(f"{config_name}: unknown argument(s) {unknown}; expected some of {allowed} "
                     f"(e.g. '{config_name}:{allowed[0]}=...')")


def choice(args: dict, name: str, choices: tuple[str, ...], default: str) -> str:
  """The argument `name`, case-insensitively one of `choices` (returned as spelled there)."""
  value = args.get(name, default)
  by_lower = {c.lower(): c for c in choices}
  if not isinstance(value, str) or value.lower() not in by_lower:
    raise ValueError(f"{name}={value!r} is unknown; expected one of {choices}")
  return by_lower[value.lower()]


def positive_int(args: dict, name: str, default: int) -> int:
  value = args.get(name, default)
  try:
    number = int(value)
  except (TypeError, ValueError):
    number = 0
  if number < 1 or str(value).strip() != str(number):
    raise ValueError(f"{name}={value!r} must be a positive integer, e.g. {name}={default}")
  return number


@functools.lru_cache(maxsize=None)
def _paper_model(size: str, model: str) -> dict:
  # Cached: solving layers / MLP width for a size builds abstract models (~0.2 s each).
  config = presets.model_config(size, model, window=WINDOW, segment_len=WINDOW)
  return dataclasses.asdict(config)


def model_fields(size: str | None, model: str) -> dict:
  """ModelConfig fields of a paper size (size=None: the tiny runlocal model)."""
  if size is None:
    return dataclasses.asdict(presets.model_config(None, model, **TINY))
  return dict(_paper_model(size, model))


def lm_config(fields: dict, *, size: str, args: dict, runlocal: bool):
  """The T1 training config around ModelConfig `fields` (see the module docstring)."""
  config = configs.base_config(model=fields)
  train_tokens = TRAIN_TOKENS[size]
  steps = positive_int(args, "steps", steps_for(train_tokens))
  # Where the run came from, for reading its results (not read by training).
  config.data.source = "packed"  # shards of python -m titans_jax.tools.pretokenize
  config.data.seq_len = SEQ_LEN
  # The tokenizer the shards were made with; zero_shot / ruler read it from the run's
  # config.json when no --tokenizer is given. '' = none recorded (they fall back to bytes).
  config.data.tokenizer = str(args.get("tokenizer", ""))

  config.train.steps = steps
  config.train.global_batch_size = GLOBAL_BATCH  # x 4096 = 0.5M tokens
  config.train.log_every = 50
  config.train.eval_every = 2000
  config.train.eval_steps = 16
  config.train.checkpoint_every = 1000
  config.optimizer.learning_rate = 4e-4
  config.optimizer.weight_decay = 0.1
  config.optimizer.clip_norm = 1.0
  # 1B of 15B (30B) tokens: 1908 steps at the paper's budget; the same fraction of a
  # shortened run (steps=N).
  config.optimizer.warmup_steps = math.ceil(steps * WARMUP_TOKENS / train_tokens)
  if runlocal:
    shrink(config, steps=positive_int(args, "steps", 4))
  return config


def shrink(config, *, steps: int):
  """runlocal: random tokens, a few steps, no checkpoint until the end, no evaluation."""
  config.data.source = "random"
  config.data.seq_len = TINY_SEQ_LEN
  config.data.tokenizer = ""
  config.train.steps = min(steps, 4)
  config.train.global_batch_size = 2
  config.train.log_every = 1
  config.train.eval_every = 0
  config.train.checkpoint_every = config.train.steps
  config.optimizer.warmup_steps = 1
  return config
