"""The three Titans mixers (paper section 4): memory as a context (MAC), as a gate
(MAG), and the MAL layer (memory layer, then sliding-window attention).

The gate (x) of MAC and MAG (paper: "normalize the outputs using learnable
vector-valued weights, followed by a non-linearity"): o = norm_y(y) * sigmoid(norm_m(m)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from titans_jax import ops
from titans_jax.models import layers
from titans_jax.models.attention import Attention
from titans_jax.models.config import ModelConfig
from titans_jax.models.memory_block import MemoryBlock, chunk_offset_hint, merge_heads
from titans_jax.ops import attention as attention_ops
from titans_jax.ops.conv import conv_initial_state
from titans_jax.ops.memory_types import is_static_position


def _write(buffer, values, offset):
  """buffer[:, offset:offset + T] = values; static offsets use slices (no scatter)."""
  values = values.astype(buffer.dtype)
  if is_static_position(offset):
    return jnp.concatenate([buffer[:, :offset], values, buffer[:, offset + values.shape[1]:]], axis=1)
  return jax.lax.dynamic_update_slice_in_dim(buffer, values, offset, axis=1)


def _on_host(value) -> bool:
  """True for a concrete array, False for a tracer (inside jit)."""
  try:
    int(value)
    return True
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
    return False


class OutputGate(nnx.Module):
  """o = norm_y(y) * sigmoid(norm_m(m)) (the paper's (x) in Eqs. 25 and 28)."""

  def __init__(self, config: ModelConfig):
    self.norm_y = layers.RMSNorm(config.width, config)
    self.norm_m = layers.RMSNorm(config.width, config)

  def __call__(self, y, m):
    return self.norm_y(y) * jax.nn.sigmoid(self.norm_m(m))


class Block(nnx.Module):
  """Pre-norm residual block: x + mixer(norm(x)), then x + SwiGLU(norm(x))."""

  def __init__(self, config: ModelConfig, mixer: nnx.Module, rngs: nnx.Rngs):
    self.mixer_norm = layers.RMSNorm(config.width, config)
    self.mixer = mixer
    self.mlp_norm = layers.RMSNorm(config.width, config)
    self.mlp = layers.SwiGLU(config, rngs)

  def init_cache(self, batch_size: int, max_length: int = 0) -> dict:
    if isinstance(self.mixer, Attention) and self.mixer.kind == "full":
      return self.mixer.init_cache(batch_size, max_length=max_length)
    return self.mixer.init_cache(batch_size)  # bounded state: needs no length

  def __call__(self, x, cache: dict, documents=None):
    mixed, cache = self.mixer(self.mixer_norm(x), cache, documents)
    x = layers.constrain(x + mixed, layers.BTD)
    x = layers.constrain(x + self.mlp(self.mlp_norm(x)), layers.BTD)
    return x, cache


class MAGMixer(nnx.Module):
  """Memory as a gate (Eqs. 26-28): x~ = [p || x]; y = SWA*(x~); o = y (x) M(x~).

  SWA* lets every query see the persistent tokens; the memory reads them first, when
  its cache is made, so a stream of any split sees the same x~.
  """

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.config = config
    self.attention = Attention(config, rngs, kind="window", num_persistent=config.num_persistent)
    self.memory = MemoryBlock(config, rngs)
    self.gate = OutputGate(config)

  def init_cache(self, batch_size: int) -> dict:
    memory = self.memory.init_cache(batch_size)
    if self.config.num_persistent:
      tokens = self.attention.persistent[...].astype(self.config.dtype)
      _, memory = self.memory(jnp.broadcast_to(tokens, (batch_size,) + tokens.shape), memory)
    return {"attention": self.attention.init_cache(batch_size), "memory": memory}

  def __call__(self, x, cache: dict, documents=None):
    y, attention_cache = self.attention(x, cache["attention"], documents)
    m, memory_cache = self.memory(x, cache["memory"], documents)
    return self.gate(y, m), {"attention": attention_cache, "memory": memory_cache}


class MALLayer(nnx.Module):
  """Memory as a layer (Eqs. 29-31), Samba-like: an LMM block (mixer + MLP), then a
  sliding-window attention block (mixer + MLP). The persistent tokens are prepended to
  the whole stack by the LM (x~ = [p || x])."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.memory_block = Block(config, MemoryBlock(config, rngs), rngs)
    self.attention_block = Block(config, Attention(config, rngs, kind="window"), rngs)

  def init_cache(self, batch_size: int, max_length: int = 0) -> dict:
    del max_length  # memory and window: bounded state
    return {"memory": self.memory_block.init_cache(batch_size),
            "attention": self.attention_block.init_cache(batch_size)}

  def __call__(self, x, cache: dict, documents=None):
    x, memory_cache = self.memory_block(x, cache["memory"], documents)
    x, attention_cache = self.attention_block(x, cache["attention"], documents)
    return x, {"memory": memory_cache, "attention": attention_cache}


class MACMixer(nnx.Module):
  """Memory as a context (Eqs. 21-25), segment by segment (length C = segment_len):

    h = M*_{s-1}(q(x))                        # Eq. 21: read the memory of the past segments
    y = Attn([p || h || x])                   # Eqs. 22-23: token i sees p, h_1..h_i, x_1..x_i
    M_s = M_{s-1}(y);  o = y (x) M*_s(y)      # Eqs. 24-25: write y, read with token state

  Cache: the memory block's cache, the weights at the segment start, the conv state of
  the read path, and the keys/values of h and x seen so far in the current segment.
  """

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.config = config
    self.attention = Attention(config, rngs, kind="segment", num_persistent=config.num_persistent)
    self.memory = MemoryBlock(config, rngs)
    self.gate = OutputGate(config)

  def init_cache(self, batch_size: int) -> dict:
    c = self.config
    memory = self.memory.init_cache(batch_size)
    shape = (batch_size, c.segment_len, c.num_heads, c.head_dim)
    cache = {"memory": memory, "segment_weights": memory["memory"].weights}
    cache.update({name: jnp.zeros(shape, c.dtype) for name in ("h_k", "h_v", "x_k", "x_v")})
    if c.use_conv:
      cache["read_conv"] = conv_initial_state(batch_size, c.conv_kernel, c.width, jnp.dtype(c.dtype))
    return cache

  def _piece(self, x, cache: dict, offset, chunk_offset=None, documents=None, reset_cache=None):
    """x [B, T, width] lies inside one segment, starting at segment offset `offset`.

    documents (offset 0 only): each document starts from reset_cache (documents.py)."""
    c, attention = self.config, self.attention
    batch, length, _ = x.shape
    state = cache["memory"]["memory"]
    positions = state.position + jnp.arange(length, dtype=jnp.int32)
    reset_conv = None
    if documents is not None:
      positions = reset_cache["memory"]["memory"].position + documents.offsets
      reset_conv = reset_cache.get("read_conv")

    # Eq. 21: h = M*_{s-1}(q), the memory as it was when the segment began.
    q_memory, read_conv = self.memory.queries(x, cache.get("read_conv"), documents, reset_conv)
    read = lambda weights: merge_heads(ops.memory_read(c.memory_config(), state._replace(weights=weights),
                                                       q_memory)).astype(x.dtype)
    h = read(cache["segment_weights"])
    if documents is not None:  # a document begun in this segment reads the memory it starts from
      begun = jax.lax.cummax(documents.starts.astype(jnp.int32), axis=1) > 0
      h = jnp.where(begun[..., None], read(reset_cache["segment_weights"]), h)

    # Eqs. 22-23: attention over [persistent || h || segment], causal inside the segment.
    q, q_plain = attention.queries(x, positions)
    # h and x through the key / value projections as one [B, 2T] input. Projected apart,
    # Shardy (jax 0.10-0.12, CPU) gave a wrong dL/dh on a (2, 2, 2) mesh: every memory
    # gradient off by ~100% (tests/train/test_distributed.py).
    both_k, both_v = attention.keys_values(jnp.concatenate([h, x], axis=1),
                                           jnp.concatenate([positions, positions], axis=-1))
    new = {"h_k": both_k[:, :length], "h_v": both_v[:, :length],
           "x_k": both_k[:, length:], "x_v": both_v[:, length:]}
    buffers = {name: _write(cache[name], new[name], offset) for name in new}
    seen = jnp.arange(c.segment_len)[None, :] <= (offset + jnp.arange(length))[:, None]  # [T, C]
    seen = seen[None, None]
    if documents is not None:  # slot j holds token j of this piece (offset 0)
      slot_ids = jnp.pad(documents.ids, ((0, 0), (0, c.segment_len - length)), constant_values=-3)
      seen = seen & (documents.ids[:, :, None] == slot_ids[:, None, :])[:, None]
    keys, values = [buffers["h_k"], buffers["x_k"]], [buffers["h_v"], buffers["x_v"]]
    prefix = (q_plain,) + attention.persistent_keys_values(batch) if c.num_persistent else None
    attended = attention_ops._softmax_attend(q, jnp.concatenate(keys, 1), jnp.concatenate(values, 1),
                                             jnp.concatenate([seen, seen], -1), prefix)
    y = attention.output(attended)

    # Eqs. 24-25: write y into the memory; gate y with the read of the updated memory.
    m, memory_cache = self.memory(y, cache["memory"], documents, chunk_offset=chunk_offset,
                                  reset_cache=None if documents is None else reset_cache["memory"])
    ends_segment = offset + length == c.segment_len
    segment_weights = jax.tree.map(lambda now, before: jnp.where(ends_segment, now, before),
                                   memory_cache["memory"].weights, cache["segment_weights"])
    new_cache = dict(cache, memory=memory_cache, segment_weights=segment_weights, **buffers)
    if c.use_conv:
      new_cache["read_conv"] = read_conv
    return self.gate(y, m), new_cache

  def __call__(self, x, cache: dict, documents=None):
    c = self.config
    segment, length = c.segment_len, x.shape[1]
    position = cache["memory"]["memory"].position
    if documents is not None:
      if not is_static_position(position) or position % segment:
        raise ValueError(f"MAC reads packed documents in one pass from a fresh cache (position a "
                         f"multiple of segment_len={segment}); got position {position}")
      return self._documents(x, cache, documents)
    if not is_static_position(position) and _on_host(position):
      # A concrete array (a loaded state, a cache from a jitted step): the segment cuts
      # below need the position as a Python int.
      position = int(position)
      memory = dict(cache["memory"], memory=cache["memory"]["memory"]._replace(position=position))
      cache = dict(cache, memory=memory)
    if not is_static_position(position):
      if length != 1:
        raise ValueError(f"MAC with a traced stream position takes one token per call, got {length}; "
                         "pass a Python int position (eager streaming) for longer pieces")
      return self._piece(x, cache, position % segment)
    # Static position: cut into [rest of the current segment] [whole segments] [tail].
    outputs, start = [], 0
    head = min((segment - position % segment) % segment, length)
    if head:
      out, cache = self._piece(x[:, :head], cache, position % segment)
      outputs.append(out)
      start = head
    whole = (length - start) // segment
    if whole:
      out, cache = self._segments(x[:, start:start + whole * segment], cache, whole)
      outputs.append(out)
      start += whole * segment
    if start < length:
      out, cache = self._piece(x[:, start:], cache, 0)
      outputs.append(out)
    return jnp.concatenate(outputs, axis=1), cache

  def _documents(self, x, cache: dict, documents):
    """Packed documents, each from `cache` (documents.py): whole segments, then the tail."""
    segment, length = self.config.segment_len, x.shape[1]
    whole = length // segment
    outputs, reset_cache = [], cache
    if whole:
      out, cache = self._segments(x[:, :whole * segment], cache, whole,
                                  documents.slice(0, whole * segment), reset_cache)
      outputs.append(out)
    if whole * segment < length:
      out, cache = self._piece(x[:, whole * segment:], cache, 0, None,
                               documents.slice(whole * segment, length), reset_cache)
      outputs.append(out)
    return jnp.concatenate(outputs, axis=1), cache

  def _segments(self, x, cache: dict, count: int, documents=None, reset_cache=None):
    """Whole segments as a lax.scan; the memory state flows from one to the next."""
    c = self.config
    state = cache["memory"]["memory"]
    start = int(state.position)
    hint = chunk_offset_hint(start, c.segment_len, c.memory_chunk)
    batch = x.shape[0]
    by_segment = lambda a: jnp.swapaxes(a.reshape((batch, count, c.segment_len) + a.shape[2:]), 0, 1)
    xs = (by_segment(x), None if documents is None else tuple(by_segment(a) for a in documents))
    carry = jax.tree.map(jnp.asarray, cache)

    def step(carry, inputs):
      segment_x, segment_documents = inputs
      if segment_documents is not None:
        segment_documents = type(documents)(*segment_documents)
      out, carry = self._piece(segment_x, carry, 0, hint, segment_documents, reset_cache)
      return carry, out

    if c.memory_remat != 0:  # keep one cache per segment for the backward pass, recompute inside
      step = jax.checkpoint(step)
    carry, outputs = jax.lax.scan(step, carry, xs)
    memory = carry["memory"]
    carry["memory"] = dict(memory, memory=memory["memory"]._replace(position=start + count * c.segment_len))
    return jnp.swapaxes(outputs, 0, 1).reshape(x.shape[:2] + (-1,)), carry
