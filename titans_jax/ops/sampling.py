"""Choosing the next token from logits: greedy, temperature, nucleus (top-p).

Pure functions of logits [B, V] (float32) and a PRNG key; jit-friendly, with the
temperature and top_p as traced scalars so one compiled step serves every setting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def top_p_filter(logits, top_p):
  """Keeps the smallest set of most likely tokens whose probability reaches top_p
  (Holtzman et al. 2020); the rest get -inf. top_p >= 1 keeps everything."""
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probabilities = jax.nn.softmax(sorted_logits, axis=-1)
  # A token stays when the mass before it is still short of top_p (so the top one always does).
  mass_before = jnp.cumsum(probabilities, axis=-1) - probabilities
  keep_sorted = mass_before < top_p
  keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
  return jnp.where(keep, logits, -jnp.inf)


def sample_next(logits, key, temperature, top_p):
  """Next token ids [B]: argmax when temperature == 0, else a draw from
  softmax(logits / temperature) restricted to the top-p nucleus."""
  logits = logits.astype(jnp.float32)
  greedy = jnp.argmax(logits, axis=-1)
  safe_temperature = jnp.where(temperature > 0, temperature, 1.0)
  filtered = top_p_filter(logits / safe_temperature, top_p)
  drawn = jax.random.categorical(key, filtered, axis=-1)
  return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)
