"""Element-wise activations of the memory MLP, and their derivatives."""

import functools

import jax
import jax.numpy as jnp


def _identity(x):
  return x


# Exact-erf GELU: the golden vectors use it, and the tanh form differs at ~1e-3.
ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "identity": _identity,
}


def get_activation(name: str):
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"activation={name!r} is unknown; expected one of {sorted(ACTIVATIONS)}") from None


def value_and_derivative(fn, z):
  """fn(z) and fn'(z) element-wise, with one forward-mode pass (differentiable again)."""
  return jax.jvp(fn, (z,), (jnp.ones_like(z),))
