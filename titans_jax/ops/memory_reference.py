"""Token-by-token reference of the neural memory: the spec's loop, written plainly.

Slow (one `lax.scan` step per token, gradients by `jax.grad`), used by the tests
as the oracle of `memory.memory_apply`. Same signature and state semantics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from titans_jax.ops.activations import get_activation
from titans_jax.ops.memory_types import (MemoryConfig, MemoryState, state_dtype, validate_inputs,
                                         validate_resets, vary_like)


def mlp_forward(weights, x, activation, residual):
  """M(x; W): h_0 = x, z_l = h_{l-1} W_l, h_l = act(z_l) for l < L, output z_L (+ x)."""
  h = x
  for index, w in enumerate(weights):
    h = h @ w
    if index < len(weights) - 1:
      h = activation(h)
  return h + x if residual else h


def associative_loss(weights, key, value, activation, residual):
  """Eq. 12: l(W; k, v) = ||M(k; W) - v||^2 (sum of squares, no 1/2)."""
  error = mlp_forward(weights, key, activation, residual) - value
  return jnp.sum(error * error)


def memory_apply_reference(config: MemoryConfig, state: MemoryState, q, k, v, theta, eta,
                           alpha, *, resets=None, reset_state: MemoryState | None = None):
  """Runs the recurrence one token at a time. Returns (y [B,H,T,d_out], new state).

  resets [B, T] bool with reset_state: at a token where resets is True the weights,
  momentum and chunk-start weights go back to reset_state's before the token is
  written (a new document of a packed sequence); see memory.memory_apply.
  """
  validate_inputs(config, state, q, k, v, theta, eta, alpha)
  validate_resets(config, state, q, resets, reset_state)
  arrays = state._replace(position=jnp.asarray(state.position, jnp.int32))
  if reset_state is not None:
    reset_state = reset_state._replace(position=jnp.asarray(reset_state.position, jnp.int32))
  y, new_state = _reference_jit(config, arrays, q, k, v, theta, eta, alpha, resets, reset_state)
  return y, new_state._replace(position=state.position + q.shape[2])


@functools.partial(jax.jit, static_argnums=0)
def _reference_jit(config, state, q, k, v, theta, eta, alpha, resets, reset_state):
  y, new_state, _ = scan_tokens(config, state, q, k, v, theta, eta, alpha, resets=resets,
                                reset_state=reset_state)
  return y, new_state


def scan_tokens(config, state, q, k, v, theta, eta, alpha, report=None, *, resets=None,
                reset_state=None):
  """The spec's loop over every (row, head) and token, in the state dtype.

  report(step) -> pytree of per-token values, stacked to [B, H, T, ...]; `step` holds
  w_before, w_after, w_grad (the chunk-start weights the gradient is taken at), u (that
  gradient), k, v and the gates as applied (theta, eta, alpha). Returns (y, new state,
  reports or None). Traceable; callers jit it.
  """
  dtype = state_dtype(state.weights[0].dtype)
  activation = get_activation(config.activation)
  b = config.chunk_size
  gates = jnp.stack([theta, eta, alpha], axis=-1).astype(dtype)  # [B,H,T,3]
  inputs = (q.astype(dtype), k.astype(dtype), v.astype(dtype), gates)
  grad_loss = jax.grad(associative_loss)

  def one_row(weights, momentum, chunk_start, chunk_gates, position, reset_to, q, k, v, gates,
              resets):
    def step(carry, token):
      w, s, w_grad, g_chunk, pos = carry
      q_t, k_t, v_t, g_t, reset_t = token
      # A new document: its state is the reset state (the chunk grid stays global).
      back = lambda now, fresh: jax.tree.map(lambda a, c: jnp.where(reset_t, c, a), now, fresh)
      w, s, w_grad = back(w, reset_to[0]), back(s, reset_to[1]), back(w_grad, reset_to[2])
      new_chunk = pos % b == 0
      w_grad = jax.tree.map(lambda a, c: jnp.where(new_chunk, a, c), w, w_grad)
      g_chunk = jnp.where(new_chunk, g_t, g_chunk)
      theta_t, eta_t, alpha_t = g_chunk if config.gate_mode == "chunk" else g_t
      if not config.momentum:
        eta_t = jnp.zeros_like(eta_t)
      if not config.forgetting:
        alpha_t = jnp.zeros_like(alpha_t)
      u = grad_loss(w_grad, k_t, v_t, activation, config.residual)
      w_before = w
      s = tuple(eta_t * s_l - theta_t * u_l for s_l, u_l in zip(s, u))  # Eq. 13 (momentum)
      w = tuple((1 - alpha_t) * w_l + s_l for w_l, s_l in zip(w, s))    # Eq. 13 (forgetting)
      read = w if config.retrieval == "token" else w_grad
      y_t = mlp_forward(read, q_t, activation, config.residual)
      reported = None if report is None else report(dict(
          w_before=w_before, w_after=w, w_grad=w_grad, u=u, k=k_t, v=v_t, theta=theta_t,
          eta=eta_t, alpha=alpha_t, activation=activation, residual=config.residual))
      return (w, s, w_grad, g_chunk, pos + 1), (y_t, reported)

    carry = (weights, momentum, chunk_start, chunk_gates, jnp.asarray(position, jnp.int32))
    carry = vary_like(carry, (q, k, v, gates, resets))  # under shard_map
    (w, s, w_grad, g_chunk, pos), (y, reported) = jax.lax.scan(step, carry,
                                                                (q, k, v, gates, resets))
    # The state names the chunk of the *next* token: at a boundary that is W itself.
    w_grad = jax.tree.map(lambda a, c: jnp.where(pos % b == 0, a, c), w, w_grad)
    return y, w, s, w_grad, g_chunk, reported

  cast = lambda arrays: tuple(a.astype(dtype) for a in arrays)
  if resets is None:  # never reset: the reset state is never read
    resets = jnp.zeros(theta.shape[:1] + theta.shape[2:], bool)
    reset_state = state
  reset_to = (cast(reset_state.weights), cast(reset_state.momentum), cast(reset_state.chunk_start))
  resets = jnp.broadcast_to(resets[:, None, :], theta.shape)
  row = jax.vmap(jax.vmap(one_row, in_axes=(0, 0, 0, 0, None, 0, 0, 0, 0, 0, 0)),
                 in_axes=(0, 0, 0, 0, None, 0, 0, 0, 0, 0, 0))
  y, w, s, w_grad, g_chunk, reported = row(
      cast(state.weights), cast(state.momentum), cast(state.chunk_start),
      state.chunk_gates.astype(dtype), state.position, reset_to, *inputs, resets)
  new_state = MemoryState(w, s, w_grad, g_chunk, state.position + q.shape[2])
  return y.astype(q.dtype), new_state, reported
