"""Attention mixers: full causal (Transformer++), sliding window with an optional
persistent prefix (SWA, MAG's SWA*, MAL), and the projections MAC's segments reuse.

Cache (streaming):
  full:   {"k", "v": [B, S, H, d] every past key, "positions": [S], "position"}
  window: {"k", "v": [B, window, H, d] the last window keys, "positions": [window],
           "valid": [window], "position"}
Persistent tokens (paper Eq. 19) are keys and values every query sees; they carry no
position (no RoPE): they are input-independent.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from titans_jax.models import layers
from titans_jax.models.config import ModelConfig
from titans_jax.ops import attention as attention_ops

KINDS = ("full", "window", "segment")


class Attention(nnx.Module):

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs, *, kind: str, num_persistent: int = 0):
    if kind not in KINDS:
      raise ValueError(f"attention kind {kind!r}; expected one of {KINDS}")
    self.config, self.kind, self.num_persistent = config, kind, num_persistent
    width = config.width
    self.q_proj = layers.dense(config, width, width, ("embed", "heads"), rngs)
    self.k_proj = layers.dense(config, width, width, ("embed", "heads"), rngs)
    self.v_proj = layers.dense(config, width, width, ("embed", "heads"), rngs)
    self.o_proj = layers.dense(config, width, width, ("heads", "embed"), rngs)
    if num_persistent:
      _, param_dtype = layers.dtypes(config)
      tokens = config.init_std * nnx.initializers.normal(1.0)(rngs.params(), (num_persistent, width),
                                                              param_dtype)
      self.persistent = layers.param(tokens, ("kv", "embed"))

  # -- projections ----------------------------------------------------------------

  def _heads(self, x):
    return x.reshape(x.shape[:2] + (self.config.num_heads, self.config.head_dim))

  def queries(self, x, positions):
    """(q with RoPE, q without it: persistent keys are scored with the latter)."""
    plain = self._heads(self.q_proj(x))
    return attention_ops.rope(plain, positions, self.config.rope_base), plain

  def keys_values(self, x, positions):
    k = attention_ops.rope(self._heads(self.k_proj(x)), positions, self.config.rope_base)
    return k, self._heads(self.v_proj(x))

  def persistent_keys_values(self, batch_size: int):
    """[B, P, H, d] keys and values of the persistent tokens (no RoPE)."""
    tokens = jnp.broadcast_to(self.persistent[...].astype(self.config.dtype),
                              (batch_size,) + self.persistent.shape)
    return self._heads(self.k_proj(tokens)), self._heads(self.v_proj(tokens))

  def output(self, attended):
    return self.o_proj(attended.reshape(attended.shape[:2] + (-1,)))

  # -- the mixer -------------------------------------------------------------------

  def init_cache(self, batch_size: int, position: int = 0, max_length: int = 0) -> dict:
    """Window kinds keep the last `window` keys. Full attention keeps every key: in a
    cache that grows (max_length 0), or in max_length fixed slots (decoding under jit,
    one compiled step for every position; the caller keeps the stream within them)."""
    c = self.config
    slots = max_length if self.kind == "full" else c.window
    shape = (batch_size, slots, c.num_heads, c.head_dim)
    cache = {"k": jnp.zeros(shape, c.dtype), "v": jnp.zeros(shape, c.dtype),
             "positions": jnp.full((slots,), -1, jnp.int32), "valid": jnp.zeros((slots,), bool),
             "position": position}
    if self.kind == "full" and max_length:
      # The key's presence (static pytree structure, visible under jit) marks fixed slots.
      cache["fixed_slots"] = jnp.zeros((0,), bool)
    return cache

  def __call__(self, x, cache: dict, documents=None):
    if documents is not None:
      return self._documents(x, cache, documents)
    batch, length, _ = x.shape
    positions = cache["position"] + jnp.arange(length, dtype=jnp.int32)
    q, q_plain = self.queries(x, positions)
    k_new, v_new = self.keys_values(x, positions)
    k = jnp.concatenate([cache["k"], k_new.astype(cache["k"].dtype)], axis=1)
    v = jnp.concatenate([cache["v"], v_new.astype(cache["v"].dtype)], axis=1)
    k_positions = jnp.concatenate([cache["positions"], positions])
    k_valid = jnp.concatenate([cache["valid"], jnp.ones((length,), bool)])
    prefix_k = prefix_v = None
    if self.num_persistent:
      prefix_k, prefix_v = self.persistent_keys_values(batch)
    if self.kind == "full":
      if prefix_k is not None:
        mask = (k_positions[None, :] <= positions[:, None]) & k_valid[None, :]
        attended = attention_ops._softmax_attend(q, k, v, mask[None, None], (q_plain, prefix_k, prefix_v))
      else:
        attended = attention_ops.full_causal_attention(q, k, v, positions, k_positions, k_valid)
      # A fixed-slot cache keeps its size (the oldest slots, still empty, drop out).
      slots = cache["k"].shape[1] if "fixed_slots" in cache else k.shape[1]
      new_cache = {"k": k[:, -slots:], "v": v[:, -slots:], "positions": k_positions[-slots:],
                   "valid": k_valid[-slots:]}
      if "fixed_slots" in cache:
        new_cache["fixed_slots"] = cache["fixed_slots"]
    else:
      window = self.config.window
      attended = attention_ops.sliding_window_attention(
          q, k, v, window=window, q_positions=positions, k_positions=k_positions, k_valid=k_valid,
          prefix_k=prefix_k, prefix_v=prefix_v, q_plain=q_plain)
      new_cache = {"k": k[:, -window:], "v": v[:, -window:], "positions": k_positions[-window:],
                   "valid": k_valid[-window:]}
    new_cache["position"] = cache["position"] + length
    return self.output(attended), new_cache

  def _documents(self, x, cache: dict, documents):
    """One pass over packed documents, each read as alone from `cache` (models/documents.py).

    The returned cache is the input one: a packed row is not continued by streaming."""
    if self.kind == "segment":
      raise ValueError("segment attention belongs to MAC, which handles documents itself")
    positions = cache["position"] + documents.offsets  # RoPE and windows count from each start
    q, q_plain = self.queries(x, positions)
    k, v = self.keys_values(x, positions)
    prefix = None
    if self.num_persistent:
      prefix = (q_plain,) + self.persistent_keys_values(x.shape[0])
    attended = attention_ops.document_attention(
        q, k, v, q_positions=positions, ids=documents.ids,
        cache=(cache["k"], cache["v"], cache["positions"], cache["valid"]),
        window=None if self.kind == "full" else self.config.window, prefix=prefix)
    return self.output(attended), cache
