"""Attention as pure functions: RoPE, blockwise sliding-window attention with a
persistent prefix and a streaming cache, full causal attention, MAC's segment mask.

Shapes: q [B, T, H, d]; k, v [B, S, H, d]; positions are absolute stream positions.
Sliding windows never build a T x T matrix: queries go in blocks, each against the
keys that can reach it (cost O(T x window)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30


def rope(x, positions, base: float = 10000.0):
  """Rotary embedding (RoFormer): x [B, T, H, d] at integer positions [T] or [B, T]."""
  half = x.shape[-1] // 2
  frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * frequencies  # [..., T, half]
  if angles.ndim == 2:
    angles = angles[None]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _softmax_attend(q, k, v, mask, prefix=None, extra=None):
  """q [..., Tq, H, d], k/v [..., Tk, H, d], mask broadcastable to [..., H, Tq, Tk].

  extra: (k2, v2, mask2), more keys scored with q under their own mask (a cache every
  block of queries reads).

  prefix: (q_plain, prefix_k, prefix_v), keys every query sees (the persistent tokens,
  [..., P, H, d]), scored with the queries before RoPE: persistent tokens hold task
  knowledge with no place in the sequence, so how much a query reads them must not
  depend on where the query is (with RoPE it would drift past the trained lengths).
  """
  scale = q.shape[-1] ** -0.5
  scores = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32) * scale
  scores = jnp.where(mask, scores, NEG_INF)
  sees_a_key = jnp.any(mask, axis=-1, keepdims=True)
  if extra is not None:
    k2, v2, mask2 = extra
    extra_scores = jnp.einsum("...qhd,...khd->...hqk", q, k2, preferred_element_type=jnp.float32) * scale
    extra_scores = jnp.where(mask2, extra_scores, NEG_INF)
    sees_a_key = sees_a_key | jnp.any(mask2, axis=-1, keepdims=True)
    scores = jnp.concatenate([jnp.broadcast_to(extra_scores, scores.shape[:-1] + extra_scores.shape[-1:]),
                              scores], axis=-1)
    v = jnp.concatenate([v2.astype(v.dtype), v], axis=-3)
  if prefix is not None:
    q_plain, prefix_k, prefix_v = prefix
    prefix_scores = jnp.einsum("...qhd,...khd->...hqk", q_plain, prefix_k,
                               preferred_element_type=jnp.float32) * scale
    scores = jnp.concatenate([prefix_scores, jnp.broadcast_to(scores, prefix_scores.shape[:-1]
                                                              + scores.shape[-1:])], axis=-1)
    v = jnp.concatenate([prefix_v.astype(v.dtype), v], axis=-3)
    sees_a_key = True
  weights = jax.nn.softmax(scores, axis=-1)
  # A query that sees no key at all (only possible with empty caches) outputs zeros.
  weights = jnp.where(sees_a_key, weights, 0.0)
  return jnp.einsum("...hqk,...khd->...qhd", weights.astype(v.dtype), v)


def full_causal_attention(q, k, v, q_positions, k_positions, k_valid):
  """Every query sees every valid key at a position <= its own (Transformer++)."""
  mask = (k_positions[None, :] <= q_positions[:, None]) & k_valid[None, :]
  return _softmax_attend(q, k, v, mask[None, None])


def sliding_window_attention(q, k, v, *, window: int, q_positions, k_positions, k_valid,
                             prefix_k=None, prefix_v=None, q_plain=None, block_size: int | None = None):
  """Causal attention over the last `window` positions (the query's own included).

  q [B, T, H, d] at q_positions [T]; k, v [B, window + T, H, d]: the `window` slots
  before the first query (a streaming cache, invalid where empty) then the T
  current keys, with k_positions [window + T] and k_valid [window + T].
  prefix_k / prefix_v [B, P, H, d]: persistent tokens every query sees, scored with
  q_plain [B, T, H, d] (the queries before RoPE; see _softmax_attend).
  Queries go in blocks of Q = min(window, T); block i reads key slots
  [i Q, i Q + window + Q), so the cost is O(T x (window + Q)), never T x T.
  """
  batch, length, heads, dim = q.shape
  if k.shape[1] != window + length:
    raise ValueError(f"k has {k.shape[1]} slots; expected window + T = {window + length}")
  block = block_size or max(min(window, length), 1)
  blocks = -(-length // block)
  pad_q = blocks * block - length
  q_blocks = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0), (0, 0))).reshape(batch, blocks, block, heads, dim)
  q_pos = jnp.pad(q_positions, (0, pad_q), constant_values=-1).reshape(blocks, block)
  pad_k = blocks * block + window - k.shape[1]
  index = jnp.arange(blocks)[:, None] * block + jnp.arange(window + block)[None, :]
  gather = lambda x, fill: jnp.take(jnp.pad(x, [(0, 0), (0, pad_k)] + [(0, 0)] * (x.ndim - 2),
                                           constant_values=fill), index, axis=1)
  k_blocks, v_blocks = gather(k, 0), gather(v, 0)  # [B, blocks, window + Q, H, d]
  k_pos = jnp.take(jnp.pad(k_positions, (0, pad_k), constant_values=-1), index)
  k_ok = jnp.take(jnp.pad(k_valid, (0, pad_k), constant_values=False), index)
  mask = (k_ok[:, None, :] & (k_pos[:, None, :] <= q_pos[:, :, None])
          & (k_pos[:, None, :] > q_pos[:, :, None] - window))  # [blocks, Q, window + Q]
  prefix = None
  if prefix_k is not None and prefix_k.shape[1] > 0:
    if q_plain is None:
      raise ValueError("persistent keys need q_plain, the queries before RoPE")
    expand = lambda p: jnp.broadcast_to(p[:, None], (batch, blocks) + p.shape[1:]).astype(k.dtype)
    plain_blocks = jnp.pad(q_plain, ((0, 0), (0, pad_q), (0, 0), (0, 0))).reshape(q_blocks.shape)
    prefix = (plain_blocks, expand(prefix_k), expand(prefix_v))
  out = _softmax_attend(q_blocks, k_blocks, v_blocks, mask[None, :, None], prefix)
  return out.reshape(batch, blocks * block, heads, dim)[:, :length]


def document_attention(q, k, v, *, q_positions, ids, cache, window: int | None = None,
                       prefix=None, block_size: int | None = None):
  """Causal attention inside each document of packed rows (see models/documents.py).

  q, k, v [B, T, H, d] with RoPE at q_positions [B, T] (counted from each document's
  start); ids [B, T] document numbers; cache (k, v [B, S, H, d], positions [S], valid
  [S]): keys of a fresh stream every document sees (the persistent tokens of LMM / MAL
  stacks), under the same causal / window rule by position. window None: full causal.
  prefix: (q_plain, prefix_k, prefix_v) as in _softmax_attend.
  Windows go in blocks of queries (cost O(T x window)); full attention is T x T.
  """
  batch, length, heads, dim = q.shape
  cache_k, cache_v, cache_positions, cache_valid = cache

  def reach(q_pos, k_pos):  # [..., Tq, 1] vs [..., 1, Tk]
    near = k_pos <= q_pos
    return near if window is None else near & (k_pos > q_pos - window)

  if window is None:
    mask = (ids[:, :, None] == ids[:, None, :]) & jnp.tril(jnp.ones((length, length), bool))
    cache_mask = cache_valid[None, None, :] & reach(q_positions[..., None], cache_positions[None, None, :])
    return _softmax_attend(q, k, v, mask[:, None], prefix,
                           (cache_k, cache_v, cache_mask[:, None]))
  block = block_size or max(min(window, length), 1)
  blocks = -(-length // block)
  pad = blocks * block - length
  blocked = lambda x, fill: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2),
                                    constant_values=fill).reshape((batch, blocks, block) + x.shape[2:])
  q_blocks, q_pos, q_ids = blocked(q, 0), blocked(q_positions, -1), blocked(ids, -2)
  # Block i's queries reach keys [i Q - window, i Q + Q): gather them from the front-padded row.
  index = jnp.arange(blocks)[:, None] * block + jnp.arange(window + block)[None, :]
  gather = lambda x, fill: jnp.take(jnp.pad(x, [(0, 0), (window, pad)] + [(0, 0)] * (x.ndim - 2),
                                            constant_values=fill), index, axis=1)
  k_blocks, v_blocks = gather(k, 0), gather(v, 0)           # [B, blocks, window + Q, H, d]
  k_pos, k_ids = gather(q_positions, -1), gather(ids, -3)   # padding matches no document
  mask = (k_ids[:, :, None, :] == q_ids[..., None]) & reach(q_pos[..., None], k_pos[:, :, None, :])
  cache_mask = cache_valid & reach(q_pos[..., None], cache_positions)   # [B, blocks, Q, S]
  expand = lambda x: jnp.broadcast_to(x[:, None], (batch, blocks) + x.shape[1:]).astype(k.dtype)
  if prefix is not None:
    q_plain, prefix_k, prefix_v = prefix
    prefix = (blocked(q_plain, 0), expand(prefix_k), expand(prefix_v))
  out = _softmax_attend(q_blocks, k_blocks, v_blocks, mask[:, :, None], prefix,
                        (expand(cache_k), expand(cache_v), cache_mask[:, :, None]))
  return out.reshape(batch, blocks * block, heads, dim)[:, :length]


def mac_segment_mask(segment: int, num_persistent: int):
  """MAC's causal rule (spec section 3) over keys [persistent || h || x] of one segment:
  query i sees every persistent token, h_1..h_i and x_1..x_i. [segment, P + 2 * segment]."""
  causal = jnp.tril(jnp.ones((segment, segment), bool))
  return jnp.concatenate([jnp.ones((segment, num_persistent), bool), causal, causal], axis=1)
