"""Causal depthwise convolution with a streaming state (the LMM block's short conv).

Shapes: x [B, T, C]; kernel [K, C]; state [B, K - 1, C] holds the last K - 1 inputs
before x (zeros at the start of a stream), so pieces chain exactly like one pass.
"""

from __future__ import annotations

import jax.numpy as jnp


def conv_initial_state(batch_size: int, kernel_size: int, channels: int, dtype=jnp.float32):
  return jnp.zeros((batch_size, kernel_size - 1, channels), dtype)


def causal_depthwise_conv(x, kernel, state, *, offsets=None, reset_state=None):
  """y_t = sum_k kernel[k] * x_{t - (K - 1) + k}: output t sees inputs t-K+1..t only.

  offsets [B, T] (tokens since each token's document began) with reset_state
  [B, K - 1, C]: an input before the token's document is replaced by the one
  reset_state holds at that distance, as if the document were read alone from it.
  """
  kernel_size, length = kernel.shape[0], x.shape[1]
  padded = jnp.concatenate([state.astype(x.dtype), x], axis=1)  # [B, K - 1 + T, C]

  resets = offsets is not None and kernel_size > 1

  def tap(values, shift, offsets):
    """values [B, n, C] read `shift` tokens back by tokens with these offsets [B, n]."""
    if not resets:
      return values
    index = jnp.clip(kernel_size - 1 - shift + offsets, 0, kernel_size - 2)[..., None]
    before = jnp.take_along_axis(reset_state.astype(x.dtype), index, axis=1)
    return jnp.where((offsets >= shift)[..., None], values, before)

  y = sum(tap(padded[:, k:k + length], kernel_size - 1 - k, offsets) * kernel[k].astype(x.dtype)
          for k in range(kernel_size))
  if kernel_size == 1:
    return y, state
  new_state = padded[:, padded.shape[1] - (kernel_size - 1):]
  if resets:  # what the next token of the last document will read
    after = offsets[:, -1:] + 1
    new_state = jnp.concatenate([tap(new_state[:, j:j + 1], kernel_size - 1 - j, after)
                                 for j in range(kernel_size - 1)], axis=1)
  return y, new_state
