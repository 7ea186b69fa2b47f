"""The LMM block (paper section 4.4; spec `titans.md` section 2): projections, short
causal convolution, gates, a multi-head neural memory, output norm and gate.

    q = l2norm(silu(conv(x W_Q)))   k = l2norm(silu(conv(x W_K)))   v = silu(conv(x W_V))
    theta = theta_max sigmoid(x w_theta + b) (1 - eta)   eta = sigmoid(.)   alpha = sigmoid(.)
    y = memory(q, k, v, theta, eta, alpha)            # ops.memory_apply, one memory per head
    out = W_O(rmsnorm_per_head(y) * silu(x W_G))

Cache (streaming): {"memory": MemoryState, "conv": [B, K - 1, 3 x width] inputs}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from titans_jax import ops
from titans_jax.models import layers
from titans_jax.models.config import ModelConfig
from titans_jax.ops.conv import causal_depthwise_conv, conv_initial_state
from titans_jax.ops.dense import dense


def l2_normalize(x, eps: float = 1e-6):
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def split_heads(x, heads: int):
  """[B, T, H * d] -> [B, H, T, d] (the memory op's layout)."""
  batch, length, width = x.shape
  return x.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3)


def merge_heads(x):
  """[B, H, T, d] -> [B, T, H * d]."""
  batch, heads, length, dim = x.shape
  return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * dim)


def chunk_offset_hint(position, step: int, chunk_size: int):
  """position % chunk_size for a scan whose steps are `step` tokens, when it is static."""
  if ops.memory_types.is_static_position(position) and step % chunk_size == 0:
    return int(position) % chunk_size
  return None


class MemoryBlock(nnx.Module):
  """The LMM token mixer: x [B, T, width] -> [B, T, width], streaming through a cache."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.config = config
    width, heads, dim = config.width, config.num_heads, config.head_dim
    _, param_dtype = layers.dtypes(config)
    self.qkv = layers.dense(config, width, 3 * width, ("embed", "heads"), rngs)
    if config.use_conv:
      # Starts as the identity (last tap 1) so q/k/v begin as plain projections.
      kernel = jnp.zeros((config.conv_kernel, 3 * width), param_dtype).at[-1].set(1.0)
      kernel += config.init_std * jax.random.normal(rngs.params(), kernel.shape, param_dtype)
      self.conv = layers.param(kernel, ("conv", "heads"))
    # Gates per token and head: theta (Eq. 13 step), eta (Eq. 10 momentum), alpha (Eq. 13 decay).
    self.theta_gate = layers.dense(config, width, heads, ("embed", "heads"), rngs, bias=True,
                                   bias_init=config.theta_bias_init)
    self.eta_gate = layers.dense(config, width, heads, ("embed", "heads"), rngs, bias=True,
                                 bias_init=config.eta_bias_init)
    self.alpha_gate = layers.dense(config, width, heads, ("embed", "heads"), rngs, bias=True,
                                   bias_init=config.alpha_bias_init)
    weights = ops.init_memory_weights(rngs.params(), num_heads=heads, d_in=dim, d_out=dim,
                                      config=config.memory_config(), dtype=param_dtype)
    # Learned initial memory W_0, one per head (spec: "learned W_0 per head").
    self.initial_weights = nnx.List([layers.param(w, ("heads", "memory_in", "memory_out"))
                                     for w in weights])
    self.out_norm = layers.HeadRMSNorm(heads, dim, config)
    self.out_gate = layers.dense(config, width, width, ("embed", "heads"), rngs)
    self.out_proj = layers.dense(config, width, width, ("heads", "embed"), rngs)

  # -- state ---------------------------------------------------------------------

  def init_cache(self, batch_size: int, position: int = 0) -> dict:
    weights = tuple(w[...] for w in self.initial_weights)
    cache = {"memory": ops.init_memory_state(weights, batch_size, position=position)}
    if self.config.use_conv:
      cache["conv"] = conv_initial_state(batch_size, self.config.conv_kernel, 3 * self.config.width,
                                         jnp.dtype(self.config.dtype))
    return cache

  # -- pieces (MAC reuses them) ------------------------------------------------------

  def memory_inputs(self, x, conv_state, documents=None, reset_conv=None):
    """q, k, v [B, H, T, d] and theta, eta, alpha [B, H, T]; the new conv state.

    documents (models/documents.py): the conv restarts from reset_conv at each start."""
    c = self.config
    projected = self.qkv(x)
    if c.use_conv:
      projected, conv_state = causal_depthwise_conv(
          projected, self.conv[...], conv_state, offsets=None if documents is None else documents.offsets,
          reset_state=reset_conv)
    q, k, v = jnp.split(jax.nn.silu(projected), 3, axis=-1)
    q, k, v = (split_heads(t, c.num_heads) for t in (q, k, v))
    q, k = l2_normalize(q), l2_normalize(k)
    gates = lambda dense: jnp.transpose(jax.nn.sigmoid(dense(x).astype(jnp.float32)), (0, 2, 1))
    theta, eta = c.theta_scale * gates(self.theta_gate), gates(self.eta_gate)
    if c.memory_momentum and c.theta_momentum_scaled:
      theta = theta * (1.0 - eta)  # see ModelConfig.theta_momentum_scaled
    return q, k, v, theta, eta, gates(self.alpha_gate), conv_state

  def queries(self, x, conv_state, documents=None, reset_conv=None):
    """The q path alone (MAC's read h = M*(q), Eq. 21): [B, H, T, d] and the conv state."""
    c = self.config
    w = self.qkv.kernel[...][:, :c.width].astype(x.dtype)
    projected = dense(x, w)
    if c.use_conv:
      projected, conv_state = causal_depthwise_conv(
          projected, self.conv[...][:, :c.width], conv_state,
          offsets=None if documents is None else documents.offsets, reset_state=reset_conv)
    return l2_normalize(split_heads(jax.nn.silu(projected), c.num_heads)), conv_state

  def output(self, x, y):
    """W_O(rmsnorm_per_head(y) * silu(x W_G)); y [B, H, T, d]."""
    normed = self.out_norm(jnp.transpose(y, (0, 2, 1, 3)))  # [B, T, H, d]
    normed = normed.reshape(normed.shape[:2] + (-1,)).astype(x.dtype)
    return self.out_proj(normed * jax.nn.silu(self.out_gate(x)))

  # -- the block ----------------------------------------------------------------------

  def __call__(self, x, cache: dict, documents=None, *, chunk_offset: int | None = None,
               reset_cache: dict | None = None):
    """documents: packed documents, each starting from reset_cache (default: `cache`)."""
    resets = {}
    if documents is not None:
      reset_cache = cache if reset_cache is None else reset_cache
      resets = dict(resets=documents.starts, reset_state=reset_cache["memory"])
    q, k, v, theta, eta, alpha, conv_state = self.memory_inputs(
        x, cache.get("conv"), documents, None if documents is None else reset_cache.get("conv"))
    y, memory = ops.memory_apply(self.config.memory_config(), cache["memory"], q, k, v,
                                 theta, eta, alpha, chunk_offset=chunk_offset, **resets)
    new_cache = {"memory": memory}
    if self.config.use_conv:
      new_cache["conv"] = conv_state
    return self.output(x, y), new_cache
