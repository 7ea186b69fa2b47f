"""What the neural memory does, token by token: surprise, reconstruction loss, retention.

Diagnostics, not training: the spec's loop (`spec/memory.md`) is run one token at a
time, like `memory_reference`, and instead of only reading the memory it also reports

  surprise_t          = ||grad_W l(W_grad; k_t, v_t)||   (Eq. 12 loss, all layers, Frobenius)
  loss_chunk_start_t  = l(W_grad; k_t, v_t)              (the loss that gradient descends)
  loss_before_t       = l(W_{t-1}; k_t, v_t)             (how well the memory knew (k_t, v_t))
  loss_after_t        = l(W_t; k_t, v_t)                 (how well it knows it once written)

with W_grad the weights at the start of token t's chunk: every gradient of a chunk is
taken there (chunked semantics), so with b > 1 the surprise is that of the chunk start.
The gates as the memory applied them (gate_mode, momentum / forgetting switches) come
back too, for `retention` and `write_weight`, which say how a token's write fades.

Shapes as in `memory_types`: B batch rows, H heads, T tokens.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from titans_jax.ops.memory_reference import associative_loss, scan_tokens
from titans_jax.ops.memory_types import MemoryConfig, MemoryState, validate_inputs


class MemoryDiagnostics(NamedTuple):
  """Per token, [B, H, T] each (state dtype)."""

  surprise: jax.Array
  loss_chunk_start: jax.Array
  loss_before: jax.Array
  loss_after: jax.Array
  # The gates the update used: chunk-held (gate_mode="chunk"), eta = 0 without momentum,
  # alpha = 0 without forgetting.
  theta: jax.Array
  eta: jax.Array
  alpha: jax.Array


def memory_diagnostics(config: MemoryConfig, state: MemoryState, q, k, v, theta, eta, alpha):
  """The memory recurrence with per-token diagnostics; same arguments as `memory_apply`.

  Returns (y [B, H, T, d_out], new MemoryState, MemoryDiagnostics). y and the state are
  those of `memory_apply` (up to float rounding), so a stream may be diagnosed in pieces.
  """
  validate_inputs(config, state, q, k, v, theta, eta, alpha)
  arrays = state._replace(position=jnp.asarray(state.position, jnp.int32))
  y, new_state, diagnostics = _diagnostics_jit(config, arrays, q, k, v, theta, eta, alpha)
  return y, new_state._replace(position=state.position + q.shape[2]), diagnostics


def _norm(tree):
  return jnp.sqrt(sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(tree)))


@functools.partial(jax.jit, static_argnums=0)
def _diagnostics_jit(config, state, q, k, v, theta, eta, alpha):
  def report(step):  # the reference loop's token step, measured
    loss = lambda weights: associative_loss(weights, step["k"], step["v"], step["activation"],
                                            step["residual"])
    return MemoryDiagnostics(_norm(step["u"]), loss(step["w_grad"]), loss(step["w_before"]),
                             loss(step["w_after"]), step["theta"], step["eta"], step["alpha"])

  return scan_tokens(config, state, q, k, v, theta, eta, alpha, report=report)


# ----------------------------------------------------------------------------
# How a write fades: gate-only recurrences over positions (last axis)
# ----------------------------------------------------------------------------


def retention(alpha, source: int):
  """prod_{m=source+1..t} (1 - alpha_m) at t >= source (1 at t = source), NaN before.

  The share of the weights W_source that forgetting (Eq. 13) leaves in W_t.
  alpha: [..., T] -> [..., T].
  """
  _check_source(alpha, source)
  return _retention_jit(jnp.asarray(alpha), jnp.asarray(source, jnp.int32))


@jax.jit
def _retention_jit(alpha, source):
  positions = jnp.arange(alpha.shape[-1])
  kept = jnp.cumprod(jnp.where(positions > source, 1.0 - alpha, 1.0), axis=-1)
  return jnp.where(positions >= source, kept, jnp.nan)


def write_weight(theta, eta, alpha, source: int):
  """c_t with W_t = ... - c_t u_source: how much of token `source`'s gradient W_t holds.

  Momentum (Eq. 10) keeps adding the gradient after it was written, forgetting (Eq. 13)
  decays it: c_S(source) = c_W(source) = theta_source, then c_S(t) = eta_t c_S(t-1) and
  c_W(t) = (1 - alpha_t) c_W(t-1) + c_S(t). 0 before `source`. Pass the gates the
  memory applied (`MemoryDiagnostics`). theta, eta, alpha: [..., T] -> [..., T].
  """
  _check_source(alpha, source)
  theta, eta, alpha = (jnp.asarray(g) for g in (theta, eta, alpha))
  return _write_weight_jit(theta, eta, alpha, jnp.asarray(source, jnp.int32))


@jax.jit
def _write_weight_jit(theta, eta, alpha, source):
  """The source position is traced, so one compilation serves every source."""
  positions = jnp.arange(alpha.shape[-1])

  def step(carry, gates):
    c_momentum, c_weights = carry
    theta_t, eta_t, alpha_t, position = gates
    starts = position == source
    c_momentum = jnp.where(starts, theta_t, eta_t * c_momentum)
    c_weights = jnp.where(starts, theta_t, (1.0 - alpha_t) * c_weights + c_momentum)
    return (c_momentum, c_weights), c_weights

  moved = [jnp.moveaxis(g, -1, 0) for g in (theta, eta, alpha)]
  positions = jnp.broadcast_to(positions.reshape((-1,) + (1,) * (theta.ndim - 1)), moved[0].shape)
  zeros = jnp.zeros(theta.shape[:-1], theta.dtype)
  _, weights = jax.lax.scan(step, (zeros, zeros), (*moved, positions))
  return jnp.moveaxis(weights, 0, -1)


def _check_source(alpha, source) -> None:
  if not 0 <= int(source) < alpha.shape[-1]:
    raise ValueError(f"source position {source} is outside the {alpha.shape[-1]} traced positions; "
                     f"expected 0 <= source < {alpha.shape[-1]}")
