"""ops.dense: the 2-D form of a dense projection equals jax.lax.dot_general, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from titans_jax.ops.dense import dense, dot_general_2d

DENSE = lambda ndim: (((ndim - 1,), (0,)), ((), ()))


@pytest.mark.parametrize("x_shape,k_shape", [((3, 5, 7), (7, 4)), ((2, 3, 4, 6), (6, 5)),
                                             ((5, 7), (7, 3)), ((7,), (7, 2)), ((2, 3, 4), (4, 2, 3))])
def test_values_and_gradients_match_dot_general(x_shape, k_shape):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, x_shape)
  kernel = jax.random.normal(kk, k_shape)
  out_shape = x_shape[:-1] + k_shape[1:]
  probe = jax.random.normal(kg, out_shape)
  dims = DENSE(len(x_shape))

  def loss(fn):
    return lambda x, kernel: jnp.sum(jnp.sin(fn(x, kernel, dims)) * probe)

  ours = jax.jit(dot_general_2d, static_argnums=2)(x, kernel, dims)
  assert ours.shape == out_shape
  np.testing.assert_allclose(ours, jax.lax.dot_general(x, kernel, dims), rtol=1e-5, atol=1e-5)
  grads = jax.jit(jax.grad(loss(dot_general_2d), argnums=(0, 1)))(x, kernel)
  expected = jax.grad(loss(jax.lax.dot_general), argnums=(0, 1))(x, kernel)
  for got, want in zip(grads, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_other_contractions_pass_through():
  x = jax.random.normal(jax.random.key(1), (2, 3, 4))
  y = jax.random.normal(jax.random.key(2), (2, 4, 5))
  batched = (((2,), (1,)), ((0,), (0,)))  # a batch axis: not a dense layer
  np.testing.assert_allclose(dot_general_2d(x, y, batched), jax.lax.dot_general(x, y, batched),
                             rtol=1e-6)
  first_axis = (((0,), (0,)), ((), ()))
  z = jax.random.normal(jax.random.key(3), (2, 6))
  np.testing.assert_allclose(dot_general_2d(x, z, first_axis), jax.lax.dot_general(x, z, first_axis),
                             rtol=1e-6)


def test_bfloat16_keeps_dtype_and_preferred_element_type():
  x = jax.random.normal(jax.random.key(4), (2, 3, 8), jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(5), (8, 4), jnp.bfloat16)
  assert dot_general_2d(x, kernel, DENSE(3)).dtype == jnp.bfloat16
  wide = dot_general_2d(x, kernel, DENSE(3), preferred_element_type=jnp.float32)
  assert wide.dtype == jnp.float32
  np.testing.assert_allclose(wide, jax.lax.dot_general(x, kernel, DENSE(3),
                                                       preferred_element_type=jnp.float32), rtol=1e-6)


def test_dense_bias_and_empty_leading_axes():
  x = jax.random.normal(jax.random.key(6), (2, 3, 4))
  kernel = jax.random.normal(jax.random.key(7), (4, 5))
  bias = jnp.arange(5.0)
  np.testing.assert_allclose(dense(x, kernel, bias), x @ kernel + bias, rtol=1e-5, atol=1e-6)
  assert dense(jnp.zeros((0, 3, 4)), kernel).shape == (0, 3, 5)


def test_nnx_linear_with_it_matches_plain_linear():
  rngs = nnx.Rngs(0)
  plain = nnx.Linear(6, 5, rngs=rngs)
  flat = nnx.Linear(6, 5, rngs=nnx.Rngs(0), dot_general=dot_general_2d)
  x = jax.random.normal(jax.random.key(8), (2, 3, 6))
  np.testing.assert_allclose(flat(x), plain(x), rtol=1e-5, atol=1e-6)


# Sharded vs single device through the models' projections: tests/train (sharding_probe.py).
