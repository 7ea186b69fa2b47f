"""The zoo's contract: causality, streaming equivalence, reductions to the baselines,
the delta rule, shapes/dtypes, a few training steps, and clear errors for bad configs.

Models are tiny (1-2 layers, width 16) and each variant compiles its forward once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from titans_jax import models, ops
from titans_jax.models import presets

VARIANTS = ("transformer", "swa", "lmm", "mac", "mag", "mal")
LENGTH = 24


def tiny_config(name, **overrides):
  fields = dict(variant=name, vocab_size=19, width=16, num_layers=2, num_heads=2, window=5,
                segment_len=6, memory_chunk=4, num_persistent=2, memory_expansion=2.0)
  fields.update(overrides)
  return models.ModelConfig(**fields)


@functools.lru_cache(maxsize=None)
def model_and_forward(variant):
  model = models.build_model(tiny_config(variant), nnx.Rngs(0))
  return model, nnx.jit(lambda m, x: m(x))


def tokens(seed, batch=2, length=LENGTH, vocab=19):
  return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, vocab)


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_token_t_never_changes_outputs_before_t(variant):
  # Given two sequences that differ only at position t
  model, forward = model_and_forward(variant)
  t = 13
  x = tokens(1, batch=1)
  changed = x.at[0, t].set((x[0, t] + 7) % 19)
  # When both run through the model
  out = forward(model, jnp.concatenate([x, changed]))
  # Then every output before t is identical, and the change is seen from t on
  np.testing.assert_array_equal(np.asarray(out[0, :t]), np.asarray(out[1, :t]))
  assert float(jnp.abs(out[0, t:] - out[1, t:]).max()) > 1e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_in_pieces_equals_one_pass(variant):
  # Given a model and cut points inside segments, windows and memory chunks
  model, forward = model_and_forward(variant)
  x = tokens(2)
  cuts = [0, 1, 7, 12, 19, LENGTH]
  # When the input is fed piece by piece with the cache carried
  cache = model.init_cache(2)
  pieces = []
  for start, end in zip(cuts[:-1], cuts[1:]):
    out, cache = model.stream(x[:, start:end], cache)
    pieces.append(out)
  # Then the outputs equal one pass
  np.testing.assert_allclose(np.asarray(jnp.concatenate(pieces, 1)), np.asarray(forward(model, x)),
                             rtol=2e-5, atol=2e-5)


def _transfer(source, target, mapping=lambda path: path):
  """Copies source's parameters into target where the (mapped) paths agree; returns
  how many target parameters were set."""
  flat_source = dict(nnx.to_flat_state(nnx.state(source, nnx.Param)))
  target_state = nnx.state(target, nnx.Param)
  flat_target = nnx.to_flat_state(target_state)
  copied = 0
  for path, variable in flat_target:
    key = mapping(path)
    assert key in flat_source, f"no source parameter for {path}"
    variable.set_value(flat_source[key].get_value())
    copied += 1
  nnx.update(target, nnx.from_flat_state(flat_target))
  return copied


@pytest.mark.parametrize("variant", ["mag", "mal"])
def test_with_memory_disabled_mag_and_mal_are_the_swa_baseline(variant):
  # Given an SWA Transformer and the variant with its memory disabled (no persistent tokens)
  swa = models.build_model(tiny_config("swa", num_persistent=0), nnx.Rngs(3))
  reduced = models.build_model(tiny_config(variant, memory_enabled=False, num_persistent=0), nnx.Rngs(4))
  # When it gets the baseline's parameters
  assert _transfer(swa, reduced) == len(nnx.to_flat_state(nnx.state(swa, nnx.Param)))
  # Then it computes the baseline's function
  x = tokens(5)
  np.testing.assert_allclose(np.asarray(reduced(x)), np.asarray(swa(x)), rtol=1e-6, atol=1e-6)


def test_lmm_with_no_momentum_no_decay_depth_1_chunk_1_is_the_delta_rule():
  # Given an LMM block configured as DeltaNet (eta = alpha = 0, linear memory, chunk 1)
  config = tiny_config("lmm", memory_depth=1, memory_momentum=False, memory_forgetting=False,
                       memory_chunk=1, eta_bias_init=3.0, alpha_bias_init=3.0)
  block = models.build_model(config, nnx.Rngs(6)).layers[0].mixer
  x = jax.random.normal(jax.random.PRNGKey(7), (2, 9, config.width))
  cache = block.init_cache(2)
  q, k, v, theta, _, _, _ = block.memory_inputs(x, cache["conv"])
  # When the memory runs inside the block
  y, _ = ops.memory_apply(config.memory_config(), cache["memory"], q, k, v, theta,
                          jnp.ones_like(theta), jnp.ones_like(theta))  # gates ignored when switched off
  # Then it is W_t = W_{t-1} - 2 theta_t k_t^T (k_t W_{t-1} - v_t), y_t = q_t W_t
  q, k, v, theta = (np.asarray(a, np.float64) for a in (q, k, v, theta))
  w = np.broadcast_to(np.asarray(block.initial_weights[0][...], np.float64), (2,) + q.shape[1:2] +
                      block.initial_weights[0].shape[1:]).copy()
  expected = np.zeros_like(v)
  for t in range(x.shape[1]):
    kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t]
    error = np.einsum("bhi,bhij->bhj", kt, w) - vt
    w = w - 2 * theta[:, :, t, None, None] * np.einsum("bhi,bhj->bhij", kt, error)
    expected[:, :, t] = np.einsum("bhi,bhij->bhj", qt, w)
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-5)
  # And the block's own output is the gated, projected read of exactly that memory
  out, _ = block(x, cache)
  np.testing.assert_allclose(np.asarray(out), np.asarray(block.output(x, jnp.asarray(expected, x.dtype))),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_dtypes(variant):
  model, forward = model_and_forward(variant)
  out = forward(model, tokens(8, length=LENGTH))
  assert out.shape == (2, LENGTH, 19) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  # bfloat16 compute: parameters stay float32, logits come back in float32
  bf16 = models.build_model(tiny_config(variant, dtype="bfloat16", num_layers=1), nnx.Rngs(0))
  assert {p.dtype for p in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype(jnp.float32)}
  out16 = nnx.jit(lambda m, x: m(x))(bf16, tokens(8, length=10))
  assert out16.shape == (2, 10, 19) and out16.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out16)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_tiny_model_trains_on_random_data(variant):
  # Given a fixed batch of random tokens (memorisable) and AdamW
  model = models.build_model(tiny_config(variant, num_layers=1), nnx.Rngs(9))
  optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)
  x = tokens(10, batch=4, length=16)

  @nnx.jit
  def step(model, optimizer):
    def loss_fn(model):
      logits = model(x[:, :-1])
      return optax.softmax_cross_entropy_with_integer_labels(logits, x[:, 1:]).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  # When it trains for a few steps
  losses = [float(step(model, optimizer)) for _ in range(8)]
  # Then the loss goes down
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.2, losses


def test_continuous_inputs_and_outputs():
  config = tiny_config("mag", input_dim=3, output_dim=2, num_layers=1)
  model = models.build_model(config, nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 11, 3))
  out = nnx.jit(lambda m, x: m(x))(model, x)
  assert out.shape == (2, 11, 2)
  stream = nnx.jit(lambda m, x, cache: m.stream(x, cache))  # jitted: far fewer compiles than eager
  cache = model.init_cache(2)
  a, cache = stream(model, x[:, :4], cache)
  b, _ = stream(model, x[:, 4:], cache)
  np.testing.assert_allclose(np.asarray(jnp.concatenate([a, b], 1)), np.asarray(out), rtol=2e-5, atol=2e-5)
  with pytest.raises(ValueError, match="input_dim=3"):
    model(jnp.zeros((2, 11), jnp.int32))


def test_every_parameter_has_logical_axis_names():
  for variant in VARIANTS:
    model, _ = model_and_forward(variant)
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
      names = variable.get_metadata().get("out_sharding")
      assert names is not None and len(names) == variable.ndim, (variant, path, names)


def test_a_window_longer_than_the_sequence_is_fine():
  model = models.build_model(tiny_config("mag", window=1000, segment_len=500, num_layers=1), nnx.Rngs(0))
  assert model(tokens(0, length=7)).shape == (2, 7, 19)


@pytest.mark.parametrize("overrides, message", [
    (dict(num_heads=3), "not divisible by model.num_heads=3"),
    (dict(segment_len=0), "model.segment_len=0 must be >= 1"),
    (dict(variant="mamba"), "model.variant='mamba' is unknown"),
    (dict(window=0), "model.window=0"),
    (dict(memory_depth=0), "model.memory_"),
    (dict(memory_chunk=0), "chunk_size"),
    (dict(dtype="float8"), "model.dtype='float8'"),
])
def test_bad_configs_fail_with_a_clear_message(overrides, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    tiny_config("mac", **overrides)


def test_inputs_of_the_wrong_kind_fail_before_tracing():
  model, _ = model_and_forward("lmm")
  with pytest.raises(ValueError, match="integer token ids"):
    model(jnp.zeros((2, 5), jnp.float32))


def test_parameter_count_is_exact_and_presets_match_their_names():
  config = tiny_config("mal", num_layers=3)
  direct = sum(x.size for x in jax.tree.leaves(nnx.state(models.build_model(config, nnx.Rngs(0)),
                                                         nnx.Param)))
  assert presets.count_parameters(config) == direct
  for size in presets.SIZES:
    for variant in ("transformer", "mac", "mal", "ttt"):
      count = presets.count_parameters(presets.model_config(size, variant))
      assert abs(count / presets.TARGETS[size] - 1) < 0.05, (size, variant, count)


def test_baseline_presets_are_lmm_settings():
  deltanet = presets.model_config(None, "deltanet")
  assert (deltanet.variant, deltanet.memory_depth, deltanet.memory_chunk) == ("lmm", 1, 1)
  assert not deltanet.memory_momentum and not deltanet.memory_forgetting
  assert presets.model_config(None, "ttt").memory_chunk == 16


def test_repetitive_long_input_keeps_the_memory_finite():
  # Given a long input of one repeated byte (every key in every chunk the same)
  model = models.build_model(tiny_config("lmm", num_layers=1, memory_chunk=16), nnx.Rngs(0))
  x = jnp.full((1, 512), 7, jnp.int32)
  # Then the default step size keeps the memory (and its gradients) finite
  def loss(model):
    return model(x).mean()
  value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
  assert np.isfinite(float(value))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
