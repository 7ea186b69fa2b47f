"""Optax optimizer: AdamW, linear warmup + cosine decay, global-norm clipping.

Weight decay applies to matrices only: norms' scales, biases and gate biases
(all 1-D or scalar parameters) are not decayed.
"""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
  """config: learning_rate, warmup_steps, end_lr_ratio; decays to the end of training."""
  warmup = max(int(config.warmup_steps), 0)
  total = max(int(total_steps), warmup + 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup, decay_steps=total,
      end_value=config.learning_rate * config.end_lr_ratio)


def decay_mask(params):
  """True for parameters that get weight decay: those with two or more axes."""
  return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
  """config: the `optimizer` section of an experiment config."""
  for field in ("learning_rate", "clip_norm"):
    if getattr(config, field) <= 0:
      raise ValueError(f"optimizer.{field} must be > 0, got {getattr(config, field)}")
  return optax.chain(
      optax.clip_by_global_norm(config.clip_norm),
      optax.adamw(learning_rate_schedule(config, total_steps), b1=config.b1, b2=config.b2, eps=config.eps,
                  weight_decay=config.weight_decay, mask=decay_mask),
  )
