"""The chunk-parallel memory op against the token-by-token reference.

Given / When / Then: random memories and streams; run the fast path and the
reference (whole and cut at random points); they agree to float64 precision.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from titans_jax.ops import (MemoryConfig, init_memory_state, init_memory_weights, memory_apply,
                            memory_apply_reference, memory_read)
from titans_jax.ops import memory as memory_module


def make_inputs(seed, config, *, batch=2, heads=2, length=20, d_in=4, d_out=None,
                dtype=jnp.float64):
  d_out = d_in if d_out is None else d_out
  keys = jax.random.split(jax.random.key(seed), 8)
  weights = init_memory_weights(keys[0], num_heads=heads, d_in=d_in, d_out=d_out,
                                config=config, dtype=dtype)
  normal = lambda key, shape: jax.random.normal(key, shape, dtype)
  q = normal(keys[1], (batch, heads, length, d_in))
  k = normal(keys[2], (batch, heads, length, d_in)) / jnp.sqrt(d_in)
  v = normal(keys[3], (batch, heads, length, d_out))
  uniform = lambda key, low, high: jax.random.uniform(key, (batch, heads, length), dtype, low, high)
  gates = (uniform(keys[4], 0.0, 0.3), uniform(keys[5], 0.0, 1.0), uniform(keys[6], 0.0, 0.3))
  return weights, (q, k, v) + gates


def run_split(op, config, state, inputs, splits):
  """Runs op over consecutive pieces cut at `splits`, carrying the state."""
  outputs, bounds = [], [0] + list(splits) + [inputs[0].shape[2]]
  for start, stop in zip(bounds[:-1], bounds[1:]):
    y, state = op(config, state, *[x[:, :, start:stop] for x in inputs])
    outputs.append(y)
  return jnp.concatenate(outputs, axis=2), state


def assert_states_close(a, b, rtol, atol):
  for name in ("weights", "momentum", "chunk_start"):
    for x, y in zip(getattr(a, name), getattr(b, name)):
      np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=name)
  np.testing.assert_allclose(a.chunk_gates, b.chunk_gates, rtol=rtol, atol=atol)
  assert int(a.position) == int(b.position)


# (config, length, d_in, d_out, split points); every knob of the op appears at least once.
RANDOM_CASES = [
    (MemoryConfig(depth=1, chunk_size=1), 12, 4, 3, [5]),
    (MemoryConfig(depth=2, chunk_size=7, expansion=2.0), 30, 4, 4, [11]),
    (MemoryConfig(depth=3, chunk_size=16, retrieval="chunk"), 40, 3, 5, [5, 21]),
    (MemoryConfig(depth=4, chunk_size=64, activation="gelu", residual=True), 70, 4, 4, [63]),
    (MemoryConfig(depth=2, chunk_size=5, momentum=False), 23, 4, 4, [3]),
    (MemoryConfig(depth=2, chunk_size=5, forgetting=False), 23, 4, 4, [10]),
    (MemoryConfig(depth=2, chunk_size=4, gate_mode="chunk"), 21, 4, 4, [6, 7]),
    (MemoryConfig(depth=1, chunk_size=3, gate_mode="chunk", retrieval="chunk", momentum=False,
                  forgetting=False), 17, 4, 4, [8]),
    (MemoryConfig(depth=2, chunk_size=8, remat_chunks=3), 60, 4, 4, [13]),
    (MemoryConfig(depth=2, chunk_size=33, activation="identity"), 35, 4, 2, [34]),
    # Whole chunks, cut on chunk boundaries: the path that carries no separate W_grad
    # (and reads q and k through the first layer in one matmul); with remat padding chunks.
    (MemoryConfig(depth=2, chunk_size=4), 24, 4, 4, [8]),
    (MemoryConfig(depth=3, chunk_size=5, remat_chunks=2, residual=True), 15, 4, 4, [10]),
    # A first layer wider in than out ([4, 2]): kept transposed inside the scan, the last not.
    (MemoryConfig(depth=2, chunk_size=6, expansion=0.5), 20, 4, 4, [9]),
]


@pytest.mark.parametrize("case", range(len(RANDOM_CASES)))
def test_fast_matches_reference_whole_and_split(case):
  config, length, d_in, d_out, splits = RANDOM_CASES[case]
  with jax.enable_x64(True):
    weights, inputs = make_inputs(case, config, length=length, d_in=d_in, d_out=d_out)
    state = init_memory_state(weights, batch_size=2)
    y_ref, state_ref = memory_apply_reference(config, state, *inputs)
    y_fast, state_fast = memory_apply(config, state, *inputs)
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-9, atol=1e-10)
    assert_states_close(state_fast, state_ref, 1e-9, 1e-10)
    # Streaming: any cut gives the outputs and the final state of one run.
    y_split, state_split = run_split(memory_apply, config, state, inputs, splits)
    np.testing.assert_allclose(y_split, y_ref, rtol=1e-9, atol=1e-10)
    assert_states_close(state_split, state_ref, 1e-9, 1e-10)


@pytest.mark.parametrize("retrieval", ["token", "chunk"])
def test_traced_position_under_jit(retrieval):
  """Given a position only known at run time, when streamed in pieces under jit, then it equals one run."""
  config = MemoryConfig(depth=2, chunk_size=6, retrieval=retrieval)
  with jax.enable_x64(True):
    weights, inputs = make_inputs(3, config, length=25)
    state = init_memory_state(weights, batch_size=2)
    y_ref, state_ref = memory_apply(config, state, *inputs)
    step = jax.jit(lambda s, *x: memory_apply(config, s, *x))
    state_dyn = state._replace(position=jnp.asarray(0, jnp.int32))
    y_split, state_split = run_split(lambda c, s, *x: step(s, *x), config, state_dyn, inputs,
                                     [4, 5, 17])
    np.testing.assert_allclose(y_split, y_ref, rtol=1e-9, atol=1e-10)
    assert_states_close(state_split, state_ref, 1e-9, 1e-10)


def test_chunk_offset_hint_matches_static_position():
  config = MemoryConfig(depth=2, chunk_size=4)
  with jax.enable_x64(True):
    weights, inputs = make_inputs(4, config, length=16)
    state = init_memory_state(weights, batch_size=2)
    y_ref, _ = memory_apply(config, state, *inputs)
    traced = jax.jit(lambda s, *x: memory_apply(config, s, *x, chunk_offset=0)[0])
    y_hint = traced(state._replace(position=jnp.asarray(0, jnp.int32)), *inputs)
    np.testing.assert_allclose(y_hint, y_ref, rtol=1e-12, atol=1e-12)


def test_delta_rule():
  """L = 1, eta = alpha = 0, b = 1: W_t = W_{t-1} - 2 theta_t k_t^T (k_t W_{t-1} - v_t)."""
  config = MemoryConfig(depth=1, chunk_size=1)
  with jax.enable_x64(True):
    weights, (q, k, v, theta, _, _) = make_inputs(5, config, length=9, batch=1, heads=1)
    zeros = jnp.zeros_like(theta)
    y, state = memory_apply(config, init_memory_state(weights, 1), q, k, v, theta, zeros, zeros)
    w = np.asarray(weights[0][0])
    for t in range(q.shape[2]):
      k_t, v_t, th = np.asarray(k[0, 0, t]), np.asarray(v[0, 0, t]), float(theta[0, 0, t])
      w = w - 2 * th * np.outer(k_t, k_t @ w - v_t)
      np.testing.assert_allclose(y[0, 0, t], np.asarray(q[0, 0, t]) @ w, rtol=1e-10)
    np.testing.assert_allclose(state.weights[0][0, 0], w, rtol=1e-10)


@pytest.mark.parametrize("retrieval", ["token", "chunk"])
def test_causal(retrieval):
  """Changing token t's key, value and gates never changes earlier outputs; chunk
  retrieval does not even see t's own chunk."""
  config = MemoryConfig(depth=2, chunk_size=4, retrieval=retrieval)
  with jax.enable_x64(True):
    weights, inputs = make_inputs(6, config, length=16)
    state = init_memory_state(weights, batch_size=2)
    y, _ = memory_apply(config, state, *inputs)
    t = 9
    k, v, *gates = inputs[1:]
    # k and v shifted; each gate moved inside its domain (theta >= 0, eta and alpha in [0, 1])
    changed = [x.at[:, :, t].add(0.5) for x in (k, v)]
    changed += [g.at[:, :, t].set(0.5 * g[:, :, t] + 0.25) for g in gates]
    y_changed, _ = memory_apply(config, state, inputs[0], *changed)
    visible = t + 1 if retrieval == "token" else (t // 4 + 1) * 4
    np.testing.assert_array_equal(y_changed[:, :, :t], y[:, :, :t])
    np.testing.assert_array_equal(y_changed[:, :, t:visible - 1], y[:, :, t:visible - 1])
    assert not np.allclose(y_changed[:, :, visible:], y[:, :, visible:])


@pytest.mark.parametrize("config", [
    MemoryConfig(depth=2, chunk_size=3),
    MemoryConfig(depth=1, chunk_size=2, retrieval="chunk", gate_mode="chunk", remat_chunks=1),
    MemoryConfig(depth=2, chunk_size=7),  # the 7 tokens are one whole chunk
], ids=["mlp2_token", "linear_chunk", "mlp2_token_whole_chunk"])
def test_check_grads_into_every_input(config):
  """Second-order: the outer loss backpropagates through the inner gradients."""
  with jax.enable_x64(True):
    weights, inputs = make_inputs(7, config, batch=1, heads=1, length=7, d_in=3)
    projection = jax.random.normal(jax.random.key(8), (3,), jnp.float64)

    def loss(weights, q, k, v, theta, eta, alpha):
      state = init_memory_state(weights, batch_size=1)
      y, state = memory_apply(config, state, q, k, v, theta, eta, alpha)
      return jnp.sum(jnp.tanh(y @ projection)) + sum(jnp.sum(w ** 2) for w in state.weights)

    check_grads(loss, (weights,) + inputs, order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config, length, split", [
    (MemoryConfig(depth=2, chunk_size=4, remat_chunks=2), 11, 6),
    (MemoryConfig(depth=2, chunk_size=4, remat_chunks=2), 12, 8),  # whole chunks only
], ids=["mid_chunk", "whole_chunks"])
def test_gradients_match_reference_with_split(config, length, split):
  with jax.enable_x64(True):
    weights, inputs = make_inputs(9, config, batch=1, heads=1, length=length)

    def loss(op, weights, inputs):
      state = init_memory_state(weights, batch_size=1)
      y, state = run_split(op, config, state, inputs, [split])
      return jnp.sum(jnp.sin(y)) + jnp.sum(state.momentum[1])

    g_fast = jax.grad(lambda w, x: loss(memory_apply, w, x), argnums=(0, 1))(weights, inputs)
    g_ref = jax.grad(lambda w, x: loss(memory_apply_reference, w, x), argnums=(0, 1))(weights,
                                                                                   inputs)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
      np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_extreme_gates_have_finite_gradients():
  """eta = 0 and alpha = 1 are exact zeros in log space, never NaN, forward or backward."""
  config = MemoryConfig(depth=2, chunk_size=4)
  weights, (q, k, v, theta, eta, alpha) = make_inputs(10, config, length=12, dtype=jnp.float32)
  eta = eta.at[:, :, ::3].set(0.0)
  alpha = alpha.at[:, :, 1::4].set(1.0)

  def loss(weights, eta, alpha):
    y, _ = memory_apply(config, init_memory_state(weights, 2), q, k, v, theta, eta, alpha)
    return jnp.sum(y ** 2)

  value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(weights, eta, alpha)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  y_ref, _ = memory_apply_reference(config, init_memory_state(weights, 2), q, k, v, theta, eta,
                                    alpha)
  y_fast, _ = memory_apply(config, init_memory_state(weights, 2), q, k, v, theta, eta, alpha)
  np.testing.assert_allclose(y_fast, y_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("inside", [1e-7, 0.0], ids=["near_the_ends", "at_the_ends"])
def test_gradients_match_reference_at_gate_domain_ends(inside):
  """eta = inside and alpha = 1 - inside at some tokens. Near the ends the log-space
  products' gradients (P / gate) stay exact. At the ends every gradient but that of the
  end gates themselves (0 there: the README's op notes) equals the token loop's."""
  config = MemoryConfig(depth=2, chunk_size=4)
  with jax.enable_x64(True):
    weights, inputs = make_inputs(12, config, batch=1, heads=2, length=13)
    inputs = list(inputs)
    end_eta = np.zeros(inputs[4].shape, bool)
    end_eta[:, :, 2::3] = True
    end_alpha = np.zeros(inputs[5].shape, bool)
    end_alpha[:, :, 1::4] = True
    inputs[4] = jnp.where(end_eta, inside, inputs[4])
    inputs[5] = jnp.where(end_alpha, 1.0 - inside, inputs[5])

    def loss(op, weights, inputs):
      y, state = op(config, init_memory_state(weights, batch_size=1), *inputs)
      return jnp.sum(jnp.sin(y)) + jnp.sum(state.weights[0] ** 2) + jnp.sum(state.momentum[1])

    g_fast = jax.grad(lambda w, x: loss(memory_apply, w, x), argnums=(0, 1))(weights, inputs)
    g_ref = jax.grad(lambda w, x: loss(memory_apply_reference, w, x), argnums=(0, 1))(weights,
                                                                                   inputs)
    for a, b in zip(jax.tree.leaves(g_fast[0]) + list(g_fast[1][:4]),
                    jax.tree.leaves(g_ref[0]) + list(g_ref[1][:4])):
      np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    for index, ends in ((4, end_eta), (5, end_alpha)):
      keep = ~ends if inside == 0.0 else np.ones_like(ends)
      np.testing.assert_allclose(np.asarray(g_fast[1][index])[keep],
                                 np.asarray(g_ref[1][index])[keep], rtol=1e-7, atol=1e-10)
      assert np.all(np.isfinite(g_fast[1][index]))


def test_vmap_over_an_extra_axis():
  config = MemoryConfig(depth=2, chunk_size=4)
  weights, inputs = make_inputs(11, config, length=10, dtype=jnp.float32)
  state = init_memory_state(weights, batch_size=2)
  q, k, v, *gates = inputs
  # the second copy: q, k, v doubled, gates squared (which keeps them in their domain)
  stacked = [jnp.stack([x, 2 * x]) for x in (q, k, v)] + [jnp.stack([g, g * g]) for g in gates]
  y = jax.vmap(lambda *x: memory_apply(config, state, *x)[0])(*stacked)
  for index in range(2):
    expected, _ = memory_apply(config, state, *[x[index] for x in stacked])
    np.testing.assert_allclose(y[index], expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_float32_state():
  config = MemoryConfig(depth=2, chunk_size=8)
  weights, inputs = make_inputs(12, config, length=24, d_in=8, dtype=jnp.float32)
  state = init_memory_state(weights, batch_size=2)
  y32, s32 = memory_apply(config, state, *inputs)
  y16, s16 = memory_apply(config, state, *[x.astype(jnp.bfloat16) for x in inputs])
  assert y16.dtype == jnp.bfloat16
  assert all(w.dtype == jnp.float32 for w in s16.weights + s16.momentum)
  scale = float(jnp.abs(y32).max())
  np.testing.assert_allclose(y16.astype(jnp.float32), y32, atol=0.03 * scale)
  np.testing.assert_allclose(s16.weights[0], s32.weights[0], atol=0.03)


def test_memory_read_is_a_forward_without_write():
  config = MemoryConfig(depth=2, chunk_size=4, retrieval="chunk")
  with jax.enable_x64(True):
    weights, inputs = make_inputs(13, config, length=4)
    state = init_memory_state(weights, batch_size=2)
    # With retrieval "chunk", the first chunk reads the state it starts from.
    y, _ = memory_apply(config, state, *inputs)
    np.testing.assert_allclose(memory_read(config, state, inputs[0]), y, rtol=1e-12)


def _backward_temp_bytes(config, length):
  weights, inputs = make_inputs(14, config, batch=1, heads=2, length=length, d_in=32,
                                dtype=jnp.float32)

  def loss(weights, q):
    y, _ = memory_apply(config, init_memory_state(weights, 1), q, *inputs[1:])
    return jnp.sum(y ** 2)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(weights, inputs[0]).compile()
  param_bytes = sum(w.size * 4 for w in weights)
  return compiled.memory_analysis().temp_size_in_bytes, param_bytes


def test_remat_bounds_backward_memory():
  """Without remat the backward pass keeps every chunk's activations and states; by
  default it keeps the states (W, S, W_grad) entering each chunk and the chunk's matmul
  results named in SAVED_FOR_BACKWARD, recomputing the rest; grouped, it keeps ~2 sqrt(n)
  states.

  The per-token tensors grow with T either way, so the part due to the state is
  isolated by growing the memory's hidden width at a fixed length.
  """
  length, chunk = 2048, 16
  num_chunks = length // chunk
  state_growth, total = {}, {}
  for remat in (0, None, 11):  # off, auto (under its budget: no groups), groups of 11 ~ sqrt(128)
    small, small_params = _backward_temp_bytes(
        MemoryConfig(depth=2, chunk_size=chunk, expansion=2.0, remat_chunks=remat), length)
    large, large_params = _backward_temp_bytes(
        MemoryConfig(depth=2, chunk_size=chunk, expansion=4.0, remat_chunks=remat), length)
    state_growth[remat] = (large - small) / (large_params - small_params)
    total[remat] = small
  # Bytes of backward memory per byte of parameters: more than the states per chunk off...
  assert state_growth[0] > 4 * num_chunks, state_growth
  # ... the three states per chunk and the saved matmul results by default ...
  assert 2 * num_chunks < state_growth[None] < 4 * num_chunks, state_growth
  assert total[None] < 0.5 * total[0], total
  # ... and about 2 sqrt(n) = 23 states of n = 128 when grouped.
  assert state_growth[11] < 0.3 * state_growth[None], state_growth


def test_auto_remat_groups_chunks_only_past_its_memory_budget():
  config = MemoryConfig(depth=2, chunk_size=64)
  budget = memory_module.AUTO_GROUP_BYTES
  assert memory_module.remat_group_size(config, 128, chunk_bytes=budget // 128) == 0
  assert memory_module.remat_group_size(config, 128, chunk_bytes=budget // 64) in (8, 16)  # ~ sqrt(128)
  assert memory_module.remat_group_size(config, 127, chunk_bytes=budget) == 12  # prime: pad
  assert memory_module.remat_group_size(dataclasses.replace(config, remat_chunks=5), 128) == 5
  assert memory_module.remat_group_size(dataclasses.replace(config, remat_chunks=0), 128,
                                        chunk_bytes=budget) == 0


def test_auto_remat_group_minimises_what_the_backward_pass_keeps():
  """Groups of g keep n / g entering states and g replayed chunks: the auto group is the
  divisor of n with the least n / g * entry_bytes + g * chunk_bytes (the smaller of two)."""
  config = MemoryConfig(depth=2, chunk_size=64)
  budget = memory_module.AUTO_GROUP_BYTES
  for num_chunks, entry, chunk in [(512, 384, 680), (512, 1, 1), (1024, 384, 680), (360, 1, 9),
                                   (360, 9, 10), (2048, 100, 700), (96, 5, 6)]:
    scale = budget // (num_chunks * chunk) + 1  # past the budget: grouped
    kept = lambda g: num_chunks // g * entry + g * chunk
    divisors = [g for g in range(1, num_chunks + 1) if num_chunks % g == 0]
    expected = min(divisors, key=lambda g: (kept(g), g))
    assert memory_module.remat_group_size(config, num_chunks, chunk * scale, entry * scale) \
        == expected, (num_chunks, entry, chunk)
  # The benchmark layer at 32K: 16 chunks a group (sqrt(512) would give 32).
  assert memory_module.remat_group_size(config, 512, 680 << 20, 384 << 20) == 16


# --------------------------------------------------------------------------- bad input


def _good():
  config = MemoryConfig(depth=2, chunk_size=4)
  weights, inputs = make_inputs(15, config, length=8, dtype=jnp.float32)
  return config, init_memory_state(weights, 2), list(inputs)


@pytest.mark.parametrize("field,value,message", [
    ("chunk_size", 0, "chunk_size"), ("depth", 0, "depth"), ("expansion", -1.0, "expansion"),
    ("retrieval", "tokens", "retrieval"), ("activation", "swish2", "activation"),
    ("gate_mode", "layer", "gate_mode"), ("remat_chunks", -2, "remat_chunks"),
    ("depth", True, "depth"), ("chunk_size", True, "chunk_size"), ("expansion", True, "expansion"),
    ("remat_chunks", False, "remat_chunks"),
])
def test_bad_config(field, value, message):
  with pytest.raises(ValueError, match=message):
    MemoryConfig(**{field: value})


def test_expansion_that_makes_no_network():
  config = MemoryConfig(depth=2, expansion=0.1)
  with pytest.raises(ValueError, match="expansion"):
    init_memory_weights(jax.random.key(0), num_heads=1, d_in=4, d_out=4, config=config)


@pytest.mark.parametrize("index,bad,message", [
    (1, lambda x: x[..., :3], "k has shape"),
    (2, lambda x: x[:, :, :5], "v has shape"),
    (3, lambda x: x[..., None], "theta has shape"),
    (0, lambda x: x.astype(jnp.int32), "q has dtype"),
    (4, lambda x: x[:1], "eta has shape"),
    (0, lambda x: x[0], "q has shape"),
])
def test_bad_inputs(index, bad, message):
  config, state, inputs = _good()
  inputs[index] = bad(inputs[index])
  for op in (memory_apply, memory_apply_reference):
    with pytest.raises(ValueError, match=message):
      op(config, state, *inputs)


@pytest.mark.parametrize("index,bad,message", [
    (4, lambda x: x.at[0, 0, 3].set(-0.1), r"eta has values in \[-0.1, .*expected values in \[0, 1\]"),
    (5, lambda x: x.at[1, 0, 0].set(1.5), r"alpha has values in .*1.5\]; expected values in \[0, 1\]"),
    (3, lambda x: x.at[0, 1, 2].set(-1.0).at[0, 0, 0].set(jnp.nan),
     r"theta has values in \[-1, .*expected values in \[0, inf\]"),
])
def test_bad_gate_values(index, bad, message):
  """Gates outside the spec's domain: a ValueError on concrete values (traced ones are
  `test_nan_and_out_of_domain_gates_reach_the_outputs`)."""
  config, state, inputs = _good()
  inputs[4] = inputs[4].at[0, 0, 0].set(1.0)  # the ends of the domain pass
  inputs[5] = inputs[5].at[0, 0, 0].set(0.0).at[0, 0, 1].set(1.0)
  for op in (memory_apply, memory_apply_reference):
    op(config, state, *inputs)
  inputs[index] = bad(inputs[index])
  for op in (memory_apply, memory_apply_reference):
    with pytest.raises(ValueError, match=message):
      op(config, state, *inputs)
  with pytest.raises(ValueError, match=message):  # concrete gates, constants of a trace
    jax.jit(lambda q: memory_apply(config, state, q, *inputs[1:])[0])(inputs[0])
  jax.jit(lambda *x: memory_apply(config, state, *x)[0])(*inputs)  # traced: values unknown


def test_bad_gate_values_are_checked_in_their_own_dtype():
  """A float64 gate just outside its domain is caught (not rounded into it first)."""
  config = MemoryConfig(depth=1, chunk_size=2)
  with jax.enable_x64(True):
    weights, inputs = make_inputs(16, config, length=4)
    state = init_memory_state(weights, batch_size=2)
    inputs = list(inputs)
    for index, value in ((4, -1e-300), (5, 1.0 + 1e-12)):
      bad = list(inputs)
      bad[index] = bad[index].at[0, 0, 1].set(value)
      with pytest.raises(ValueError, match="expected values in \\[0, 1\\]"):
        memory_apply(config, state, *bad)


@pytest.mark.parametrize("retrieval", ["token", "chunk"])
@pytest.mark.parametrize("gate,value", [(3, jnp.nan), (4, jnp.nan), (5, jnp.nan), (4, -0.5),
                                        (5, 1.5)], ids=["theta_nan", "eta_nan", "alpha_nan",
                                                        "eta_negative", "alpha_above_1"])
def test_nan_and_out_of_domain_gates_reach_the_outputs(retrieval, gate, value):
  """Under jit (no value checks) a NaN gate, or one the log-space products cannot take,
  turns the outputs NaN from the token it reaches on, as in the token loop for NaN; never
  a finite output from a gate read as zero. Earlier chunks stay finite."""
  b, t = 4, 9
  config = MemoryConfig(depth=2, chunk_size=b, retrieval=retrieval)
  weights, inputs = make_inputs(21, config, length=16, dtype=jnp.float32)
  state = init_memory_state(weights, batch_size=2)
  inputs = list(inputs)
  inputs[gate] = inputs[gate].at[:, :, t].set(value)
  y = np.asarray(jax.jit(lambda *x: memory_apply(config, state, *x)[0])(*inputs))
  first_nan = t if retrieval == "token" else (t // b + 1) * b  # the first output that reads it
  assert np.all(np.isnan(y[:, :, first_nan:])), np.isnan(y).any(axis=-1)
  assert np.all(np.isfinite(y[:, :, :(t // b) * b]))
  if np.isnan(value):
    y_ref = np.asarray(jax.jit(lambda *x: memory_apply_reference(config, state, *x)[0])(*inputs))
    assert np.all(np.isnan(y_ref[:, :, first_nan:])) and np.all(np.isfinite(y_ref[:, :, :t]))


def test_bad_state_and_offsets():
  config, state, inputs = _good()
  with pytest.raises(ValueError, match="depth=3"):
    memory_apply(dataclasses.replace(config, depth=3), state, *inputs)
  with pytest.raises(ValueError, match="chunk_offset"):
    memory_apply(config, state, *inputs, chunk_offset=4)
  with pytest.raises(ValueError, match="chunk_offset"):  # a bool is not an offset
    memory_apply(config, state, *inputs, chunk_offset=True)
  with pytest.raises(ValueError, match="position"):
    memory_apply(config, state._replace(position=-1), *inputs)
  with pytest.raises(ValueError, match="position"):
    memory_apply(config, state._replace(position=True), *inputs)
  with pytest.raises(ValueError, match="T = 0"):
    memory_apply(config, state, *[x[:, :, :0] for x in inputs])
  with pytest.raises(ValueError, match="residual"):
    memory_apply(dataclasses.replace(config, residual=True), state,
                 *inputs[:2], inputs[2][..., :3], *inputs[3:])


@pytest.mark.parametrize("size", [1, 7, 64])
def test_segment_products_equal_direct_products(size):
  """P[i, j] = prod_{m=j+1..i} gate_m (1 on the diagonal, 0 above it), against the direct
  product of the gates: float64 to 1e-12 and float32 to float32 precision, exact zeros for
  every span that holds a zero gate, and finite gradients into the nonzero gates."""
  rng = np.random.default_rng(size)
  gates = rng.uniform(1e-3, 1.0, size=(6, size))
  gates[1, size // 2] = 0.0
  gates[2, ::3] = 0.0
  expected = np.zeros((6, size, size))
  for row in range(6):
    for i in range(size):
      for j in range(i + 1):
        expected[row, i, j] = np.prod(gates[row, j + 1:i + 1])
  with jax.enable_x64(True):
    log_gates = memory_module.safe_log(jnp.asarray(gates))
    products = np.asarray(jax.vmap(memory_module.segment_products)(log_gates))
    np.testing.assert_allclose(products, expected, rtol=1e-12, atol=0)
    assert np.all(products[expected == 0] == 0)  # exact zeros, never a tiny leftover
    grads = jax.grad(lambda lg: jnp.sum(jax.vmap(memory_module.segment_products)(lg) ** 2))(
        log_gates)
    assert np.all(np.isfinite(np.asarray(grads)))
  products32 = np.asarray(jax.jit(jax.vmap(memory_module.segment_products))(
      memory_module.safe_log(jnp.asarray(gates, jnp.float32))))
  np.testing.assert_allclose(products32, expected, rtol=2e-5, atol=0)
  assert np.all(products32[expected == 0] == 0)


def test_read_factors_equal_the_chunk_closed_form():
  """A_{0->i} and D_i computed before the scan (associative scan) match the chunk's
  closed form (segment products), zero gates and padding included."""
  key = jax.random.split(jax.random.key(3), 3)
  b = 16
  eta = jax.random.uniform(key[0], (5, b)).at[1, 3].set(0.0)
  alpha = jax.random.uniform(key[1], (5, b)).at[2, 7].set(1.0)  # a full forget: keep = 0
  write = (jax.random.uniform(key[2], (5, b)) > 0.2).astype(jnp.float32)
  log_eta, log_keep = memory_module.safe_log(eta), memory_module.safe_log(1.0 - alpha)
  theta = jnp.ones((5, b))
  keep_from_start, carried = memory_module.read_factors(log_eta, log_keep, write)
  closed = jax.vmap(memory_module._chunk_coefficients)(theta, log_eta, log_keep, write)
  np.testing.assert_allclose(keep_from_start, closed[2], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(carried, closed[1], rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(np.asarray(jax.grad(
      lambda le, lk: memory_module.read_factors(le, lk, write)[1].sum(), argnums=(0, 1))(
          log_eta, log_keep))))
