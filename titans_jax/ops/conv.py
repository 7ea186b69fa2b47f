"""Causal depthwise convolution with a streaming state (the LMM block's short conv).

Shapes: x [B, T, C]; kernel [K, C]; state [B, K - 1, C] holds the last K - 1 inputs
before x (zeros at the start of a stream), so pieces chain exactly like one pass.
"""

from __future__ import annotations

import jax.numpy as jnp


def conv_initial_state(batch_size: int, kernel_size: int, channels: int, dtype=jnp.float32):
  return jnp.zeros((batch_size, kernel_size - 1, channels), dtype)


def causal_depthwise_conv(x, kernel, state):
  """y_t = sum_k kernel[k] * x_{t - (K - 1) + k}: output t sees inputs t-K+1..t only."""
  kernel_size, length = kernel.shape[0], x.shape[1]
  padded = jnp.concatenate([state.astype(x.dtype), x], axis=1)  # [B, K - 1 + T, C]
  y = sum(padded[:, k:k + length] * kernel[k].astype(x.dtype) for k in range(kernel_size))
  new_state = padded[:, padded.shape[1] - (kernel_size - 1):] if kernel_size > 1 else state
  return y, new_state
