"""Document resets inside a stream (packed sequences): fast path == reference, and a
document that starts on a chunk boundary reads exactly as it would alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from titans_jax.ops import MemoryConfig, init_memory_state, memory_apply, memory_apply_reference
from tests.ops.test_memory import assert_states_close, make_inputs


def _reset_state(config, weights, seed, d_in, d_out):
  """A reset state unlike the initial one: the state after a random prefix of 6 tokens."""
  _, prefix = make_inputs(seed + 100, config, length=6, d_in=d_in, d_out=d_out)
  return memory_apply_reference(config, init_memory_state(weights, batch_size=2), *prefix)[1]


# (config, length, d_in, d_out, document starts of row 0, of row 1, split point)
CASES = [
    (MemoryConfig(depth=2, chunk_size=5, expansion=2.0, remat_chunks=2), 23, 4, 4,
     [0, 5, 7, 8, 19], [2, 10], 6),
    (MemoryConfig(depth=3, chunk_size=4, retrieval="chunk", momentum=False, forgetting=False,
                  activation="gelu", residual=True), 18, 4, 4, [1, 2, 3, 12], [8, 17], None),
]


def _resets(length, *rows):
  resets = np.zeros((len(rows), length), bool)
  for row, starts in enumerate(rows):
    resets[row, starts] = True
  return jnp.asarray(resets)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_resets_fast_matches_reference(case):
  config, length, d_in, d_out, starts0, starts1, split = CASES[case]
  with jax.enable_x64(True):
    weights, inputs = make_inputs(case, config, length=length, d_in=d_in, d_out=d_out)
    state = init_memory_state(weights, batch_size=2)
    reset_state = _reset_state(config, weights, case, d_in, d_out)
    resets = _resets(length, starts0, starts1)
    y_ref, state_ref = memory_apply_reference(config, state, *inputs, resets=resets,
                                              reset_state=reset_state)
    y_fast, state_fast = memory_apply(config, state, *inputs, resets=resets, reset_state=reset_state)
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-9, atol=1e-10)
    assert_states_close(state_fast, state_ref, 1e-9, 1e-10)
    # Resets change something: the comparison above can fail.
    assert not np.allclose(y_ref, memory_apply(config, state, *inputs)[0])
    if split is None:
      return
    # Streaming with resets: cut anywhere, same outputs and state.
    cut = lambda x, a, b: x[:, :, a:b]
    y_a, mid = memory_apply(config, state, *[cut(x, 0, split) for x in inputs],
                            resets=resets[:, :split], reset_state=reset_state)
    y_b, end = memory_apply(config, mid, *[cut(x, split, length) for x in inputs],
                            resets=resets[:, split:], reset_state=reset_state)
    np.testing.assert_allclose(jnp.concatenate([y_a, y_b], 2), y_ref, rtol=1e-9, atol=1e-10)
    assert_states_close(end, state_ref, 1e-9, 1e-10)


def test_document_on_a_chunk_boundary_reads_as_alone():
  config = MemoryConfig(depth=2, chunk_size=4)
  with jax.enable_x64(True):
    weights, inputs = make_inputs(0, config, length=20, d_in=4)
    # The reset state sits 2 tokens into a chunk, like a stream after 2 persistent tokens.
    _, prefix = make_inputs(1, config, length=2, d_in=4)
    fresh = memory_apply(config, init_memory_state(weights, batch_size=2), *prefix)[1]
    state = memory_apply(config, init_memory_state(weights, batch_size=2),
                         *make_inputs(2, config, length=2, d_in=4)[1])[1]
    resets = _resets(20, [8], [8])  # row position 8 = stream position 10 = 2 mod 4
    y, _ = memory_apply(config, state, *inputs, resets=resets, reset_state=fresh)
    alone, _ = memory_apply(config, fresh, *[x[:, :, 8:] for x in inputs])
    np.testing.assert_allclose(y[:, :, 8:], alone, rtol=1e-9, atol=1e-10)


def test_gradients_flow_into_the_reset_state():
  config = MemoryConfig(depth=2, chunk_size=4)
  weights, inputs = make_inputs(3, config, length=12, d_in=4, dtype=jnp.float32)
  resets = _resets(12, [5], [4])

  def loss(op, reset_weights):
    reset_state = init_memory_state(reset_weights, batch_size=2)
    y, _ = op(config, init_memory_state(weights, batch_size=2), *inputs, resets=resets,
              reset_state=reset_state)
    return jnp.sum(y ** 2)

  fast = jax.grad(lambda w: loss(memory_apply, w))(weights)
  reference = jax.grad(lambda w: loss(memory_apply_reference, w))(weights)
  for a, b in zip(fast, reference):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)
    assert np.abs(np.asarray(a)).max() > 0


def test_bad_resets():
  config = MemoryConfig(depth=1, chunk_size=2)
  weights, inputs = make_inputs(0, config, length=6, dtype=jnp.float32)
  state = init_memory_state(weights, batch_size=2)
  with pytest.raises(ValueError, match="go together"):
    memory_apply(config, state, *inputs, resets=jnp.zeros((2, 6), bool))
  with pytest.raises(ValueError, match=r"expected bool \[B, T\]"):
    memory_apply(config, state, *inputs, resets=jnp.zeros((2, 5), bool), reset_state=state)
  with pytest.raises(ValueError, match="gate_mode='token'"):
    memory_apply(MemoryConfig(depth=1, chunk_size=2, gate_mode="chunk"), state, *inputs,
                 resets=jnp.zeros((2, 6), bool), reset_state=state)
