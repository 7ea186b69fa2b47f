"""Token-by-token reference of the neural memory: the spec's loop, written plainly.

Slow (one `lax.scan` step per token, gradients by `jax.grad`), used by the tests
as the oracle of `memory.memory_apply`. Same signature and state semantics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from titans_jax.ops.activations import get_activation
from titans_jax.ops.memory_types import MemoryConfig, MemoryState, state_dtype, validate_inputs


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
                           alpha):
  """Runs the recurrence one token at a time. Returns (y [B,H,T,d_out], new state)."""
  validate_inputs(config, state, q, k, v, theta, eta, alpha)
  arrays = state._replace(position=jnp.asarray(state.position, jnp.int32))
  y, new_state = _reference_jit(config, arrays, q, k, v, theta, eta, alpha)
  return y, new_state._replace(position=state.position + q.shape[2])


@functools.partial(jax.jit, static_argnums=0)
def _reference_jit(config, state, q, k, v, theta, eta, alpha):
  y, new_state, _ = scan_tokens(config, state, q, k, v, theta, eta, alpha)
  return y, new_state


def scan_tokens(config, state, q, k, v, theta, eta, alpha, report=None):
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

  def one_row(weights, momentum, chunk_start, chunk_gates, position, q, k, v, gates):
    def step(carry, token):
      w, s, w_grad, g_chunk, pos = carry
      q_t, k_t, v_t, g_t = token
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
    (w, s, w_grad, g_chunk, pos), (y, reported) = jax.lax.scan(step, carry, (q, k, v, gates))
    # The state names the chunk of the *next* token: at a boundary that is W itself.
    w_grad = jax.tree.map(lambda a, c: jnp.where(pos % b == 0, a, c), w, w_grad)
    return y, w, s, w_grad, g_chunk, reported

  row = jax.vmap(jax.vmap(one_row, in_axes=(0, 0, 0, 0, None, 0, 0, 0, 0)),
                 in_axes=(0, 0, 0, 0, None, 0, 0, 0, 0))
  y, w, s, w_grad, g_chunk, reported = row(
      tuple(a.astype(dtype) for a in state.weights), tuple(a.astype(dtype) for a in state.momentum),
      tuple(a.astype(dtype) for a in state.chunk_start), state.chunk_gates.astype(dtype),
      state.position, *inputs)
  new_state = MemoryState(w, s, w_grad, g_chunk, state.position + q.shape[2])
  return y.astype(q.dtype), new_state, reported
