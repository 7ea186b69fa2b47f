"""Building blocks shared by every variant: dense layers with logical axis names,
RMSNorm, the SwiGLU MLP, and activation sharding constraints.

Parameters carry logical names (`embed`, `heads`, `mlp`, `vocab`, `norm`, `conv`,
`memory_in`, `memory_out`); the training system's rules map them to mesh axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import spmd
from jax.sharding import PartitionSpec

from titans_jax.models.config import ModelConfig
from titans_jax.ops.dense import dot_general_2d


def dtypes(config: ModelConfig):
  return jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)


def partitioned(init, names):
  # eager_sharding=False: models build without a mesh (notebooks, tests); the train
  # step places the parameters from these names.
  return nnx.with_partitioning(init, names, eager_sharding=False)


def dense(config: ModelConfig, d_in: int, d_out: int, names, rngs, *, std: float | None = None,
          bias: bool = False, bias_init: float = 0.0) -> nnx.Linear:
  compute, params = dtypes(config)
  init = nnx.initializers.normal(config.init_std if std is None else std)
  # dot_general_2d: [B, T, d_in] inputs as one 2-D matmul (a faster weight gradient on CPU).
  return nnx.Linear(d_in, d_out, use_bias=bias, dtype=compute, param_dtype=params, rngs=rngs,
                    dot_general=dot_general_2d, kernel_init=partitioned(init, names),
                    bias_init=partitioned(nnx.initializers.constant(bias_init), names[1:]))


def param(value, names) -> nnx.Param:
  """A parameter built from an array, with logical axis names."""
  return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False)


def constrain(x, names):
  """with_sharding_constraint by logical names, when rules and a mesh are in context."""
  rules = spmd.get_logical_axis_rules()
  if not rules or jax.sharding.get_abstract_mesh().empty:  # no mesh: nothing to say
    return x
  # Axes the rules leave unmapped stay free for the partitioner (not forced replicated).
  spec = [PartitionSpec.UNCONSTRAINED if axis is None else axis
          for axis in spmd.apply_rules(names, rules)]
  return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))


BTD = ("activation_batch", "activation_length", "activation_embed")


class RMSNorm(nnx.Module):
  """x / rms(x) * scale over the last axis, computed in float32."""

  def __init__(self, dim: int, config: ModelConfig):
    _, params = dtypes(config)
    self.eps = config.norm_eps
    self.scale = param(jnp.ones((dim,), params), ("norm",))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class HeadRMSNorm(nnx.Module):
  """RMSNorm over each head's features of x [..., H, d]; one scale per (head, feature),
  stored flat so weight decay (for arrays of >= 2 axes) leaves it alone."""

  def __init__(self, heads: int, dim: int, config: ModelConfig):
    _, params = dtypes(config)
    self.eps, self.heads, self.dim = config.norm_eps, heads, dim
    self.scale = param(jnp.ones((heads * dim,), params), ("norm",))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    scale = self.scale[...].astype(jnp.float32).reshape(self.heads, self.dim)
    return (normed * scale).astype(x.dtype)


class SwiGLU(nnx.Module):
  """Llama's MLP: W_down(silu(x W_gate) * x W_up)."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    hidden = config.hidden
    self.gate = dense(config, config.width, hidden, ("embed", "mlp"), rngs)
    self.up = dense(config, config.width, hidden, ("embed", "mlp"), rngs)
    self.down = dense(config, hidden, config.width, ("mlp", "embed"), rngs)

  def __call__(self, x):
    hidden = jax.nn.silu(self.gate(x)) * self.up(x)
    hidden = constrain(hidden, ("activation_batch", "activation_length", "activation_mlp"))
    return self.down(hidden)
