"""Memory traces: the diagnostics op against hand-computed gradients and the fast op,
and the per-layer traces of every memory variant against the modules' own formulas.

Tiny models (width 32, 2 heads, memory chunk 4, 24 tokens); each variant runs its
forward a few times with the same shapes, so it compiles once.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from titans_jax import models, ops
from titans_jax.evaluation import traces
from titans_jax.ops import memory_diagnostics as diagnostics
from titans_jax.ops.activations import get_activation

LENGTH, CHUNK = 24, 4


@functools.lru_cache(maxsize=None)
def eq12_loss_and_gradient_norm(activation="silu"):
  """Eq. 12 written out, ||M(k; W) - v||^2, and the Frobenius norm of its gradient in W.

  Jitted over heads (W [H, ...], k / v [H, T, d]) and tokens, so each shape compiles once.
  """
  act = get_activation(activation)

  def one(weights, key, value):
    def loss(weights):
      h = key
      for index, w in enumerate(weights):
        h = h @ w
        if index < len(weights) - 1:
          h = act(h)
      return jnp.sum((h - value) ** 2)

    value_, grads = jax.value_and_grad(loss)(weights)
    return value_, jnp.sqrt(sum(jnp.sum(g * g) for g in grads))

  return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, 0))))


def random_memory_inputs(seed, heads=2, length=2 * LENGTH, dim=16):
  """q, k, v [1, H, T, d], theta, eta, alpha [1, H, T]: numpy, so slicing compiles nothing."""
  rng = np.random.default_rng(seed)
  q, k, v = (rng.standard_normal((1, heads, length, dim)).astype(np.float32) for _ in range(3))
  q, k = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))  # as the block feeds it
  theta, eta, alpha = (rng.uniform(0.0, high, (1, heads, length)).astype(np.float32)
                       for high in (0.2, 1.0, 0.2))
  return q, k, v, theta, eta, alpha


# -- the op ---------------------------------------------------------------------------
# Shapes and memory config are the tiny models' (head dim 16, 24-token calls), so the
# op and model tests share most compilations.


def test_diagnostics_run_the_memory_and_take_the_surprise_at_the_chunk_start():
  # Given the tiny models' memory (2 layers, chunk 4) and 48 tokens in two calls, the
  # stream starting mid-chunk at position 2 (as after persistent tokens)
  config = tiny_config("lmm").memory_config()
  rng = np.random.default_rng(0)
  w0 = tuple((rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
             for shape in ((2, 16, 64), (2, 64, 16)))
  state = ops.init_memory_state(w0, batch_size=1, position=2)
  inputs = random_memory_inputs(1)
  first, second = ([a[:, :, lo:lo + LENGTH] for a in inputs] for lo in (0, LENGTH))
  # When the diagnostics and the fast op both run them with the state carried
  y_a, middle, report_a = diagnostics.memory_diagnostics(config, state, *first)
  y_b, final, report_b = diagnostics.memory_diagnostics(config, middle, *second)
  fast_y_a, fast_middle = ops.memory_apply(config, state, *first)
  fast_y_b, fast_final = ops.memory_apply(config, fast_middle, *second)
  report = {name: np.concatenate([np.asarray(a), np.asarray(b)], axis=2)[0]
            for name, a, b in zip(report_a._fields, report_a, report_b)}
  # Then outputs and states agree
  for got, want in zip((y_a, y_b) + middle.weights + final.weights + final.momentum,
                       (fast_y_a, fast_y_b) + fast_middle.weights + fast_final.weights
                       + fast_final.momentum):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert final.position == 2 + 2 * LENGTH
  # And the surprise and loss are Eq. 12's at the weights of the chunk start: W_0 for
  # positions 2-3 (tokens 0-1); for positions 24-27 (tokens 22-25, across the cut) the
  # weights at position 24, which the first call's state carries as chunk_start
  _, k, v, *_ = inputs
  loss_and_norm = eq12_loss_and_gradient_norm()
  for first_token, count, weights in ((0, 2, w0), (LENGTH - 2, CHUNK, fast_middle.chunk_start)):
    tokens = slice(first_token, first_token + CHUNK)  # CHUNK wide: one compilation
    weights = tuple(w[0] if w.ndim == 4 else w for w in weights)
    loss, norm = loss_and_norm(weights, k[0, :, tokens], v[0, :, tokens])
    checked = slice(first_token, first_token + count)
    np.testing.assert_allclose(report["surprise"][:, checked], norm[:, :count], rtol=1e-4)
    np.testing.assert_allclose(report["loss_chunk_start"][:, checked], loss[:, :count], rtol=1e-4)
  # Inside a chunk the gradient point stays put while the weights move on
  assert np.abs(report["loss_before"][:, 23:26] - report["loss_chunk_start"][:, 23:26]).max() > 0
  # At token 0 W_{t-1} is W_0; after the last token W_t is the final weights
  np.testing.assert_allclose(report["loss_before"][:, 0], report["loss_chunk_start"][:, 0], rtol=1e-6)
  last, _ = loss_and_norm(tuple(w[0] for w in fast_final.weights), k[0, :, -CHUNK:], v[0, :, -CHUNK:])
  np.testing.assert_allclose(report["loss_after"][:, -1], np.asarray(last)[:, -1], rtol=1e-4)
  np.testing.assert_allclose(report["alpha"], inputs[5][0], rtol=1e-6)  # token gates, as applied


def test_retention_and_write_weight_follow_forgetting_and_momentum():
  # Given per-token gates of 2 heads over 24 positions and a write at position 5
  _, _, _, theta, eta, alpha = (a[0, :, :LENGTH] for a in random_memory_inputs(2))
  source = 5
  # When retention and write weight are computed
  kept = np.asarray(diagnostics.retention(alpha, source))
  written = np.asarray(diagnostics.write_weight(theta, eta, alpha, source))
  theta, eta, alpha = (a.astype(np.float64) for a in (theta, eta, alpha))
  # Then retention is prod(1 - alpha) after the write, NaN before it
  assert np.isnan(kept[:, :source]).all() and np.all(kept[:, source] == 1.0)
  np.testing.assert_allclose(kept[:, source + 1:], np.cumprod(1 - alpha[:, source + 1:], axis=1),
                             rtol=1e-5)
  # And the write weight is the coefficient of u_source in W_t, from the scalar recurrence
  s = w = np.zeros(2)
  expected = []
  for t in range(LENGTH):
    s = eta[:, t] * s - theta[:, t] * (t == source)   # Eq. 10
    w = (1 - alpha[:, t]) * w + s                     # Eq. 13
    expected.append(-w)
  np.testing.assert_allclose(written, np.stack(expected, axis=1), rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="source position 24"):
    diagnostics.retention(alpha, LENGTH)


# -- the models -----------------------------------------------------------------------


def tiny_config(variant, **overrides):
  fields = dict(variant=variant, vocab_size=128, width=32, num_layers=1, num_heads=2, window=8,
                segment_len=8, memory_chunk=CHUNK, num_persistent=0, mlp_hidden=32)
  fields.update(overrides)
  return models.ModelConfig(**fields)


# MAC: two segments of 24, so its memory calls have the other variants' shapes.
VARIANTS = {"lmm": dict(num_layers=2), "mag": {}, "mal": {}, "mac": dict(segment_len=LENGTH)}
TOKENS = np.random.default_rng(0).integers(0, 128, 2 * LENGTH).astype(np.int32)


def tokens_for(variant):
  return TOKENS if variant == "mac" else TOKENS[:LENGTH]


@functools.lru_cache(maxsize=None)
def traced(variant):
  """The model, its normal logits, the logits of a recorded forward pass, the traces."""
  model = models.build_model(tiny_config(variant, **VARIANTS[variant]), nnx.Rngs(0))
  inputs = jnp.asarray(tokens_for(variant))[None]
  normal = model(inputs)
  with traces.record_memory_writes():
    recorded = model(inputs)
  return model, normal, recorded, traces.memory_traces(model, tokens_for(variant), retention_from=5)


def independent_block_inputs(model):
  """Each memory block's input x, from the embedding through the layers' own calls."""
  x = model.embed(jnp.asarray(tokens_for(model.config.variant))[None])
  inputs = []
  for layer, cache in zip(model.layers, model.init_cache(1)):
    if model.config.variant == "mal":
      inputs.append(layer.memory_block.mixer_norm(x))
    else:
      inputs.append(layer.mixer_norm(x))  # lmm, and the memory branch of MAG
    x, _ = layer(x, cache)
  return inputs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_traces_are_the_models_gates_and_first_chunk_surprise(variant):
  # Given a tiny random model of a memory variant, traced over 24 tokens (MAC: 48)
  model, normal, recorded, result = traced(variant)
  blocks = traces.memory_blocks(model)
  layers, length = model.config.num_layers, len(tokens_for(variant))
  # Then recording leaves the forward pass as it was (MAC: its segment loop instead of a scan)
  np.testing.assert_allclose(recorded, normal, rtol=1e-5, atol=1e-5)
  # And every trace is [memory layers, heads, T]
  for name in traces.PER_TOKEN:
    assert result[name].shape == (layers, 2, length), name
  assert result["memory_input"].shape == (layers, length, 32)
  np.testing.assert_array_equal(result["layer"], np.arange(layers))
  assert int(result["start_position"]) == 0 and int(result["chunk_size"]) == CHUNK
  if variant != "mac":  # MAC's memory reads its attention output, which only the trace sees
    for index, x in enumerate(independent_block_inputs(model)):
      np.testing.assert_allclose(result["memory_input"][index], x[0], atol=1e-5)
  for index, (_, block) in enumerate(blocks):
    x = result["memory_input"][index].astype(np.float64)  # [T, width]
    # Gates: theta = theta_scale sigmoid(x w + b) (1 - eta), eta and alpha = sigmoid(x w + b)
    # (Eqs. 10, 13; the (1 - eta) factor: ModelConfig.theta_momentum_scaled)
    gate = lambda dense: (1 / (1 + np.exp(-(x @ np.asarray(dense.kernel[...])
                                            + np.asarray(dense.bias[...]))))).T
    np.testing.assert_allclose(result["theta"][index], model.config.theta_scale
                               * gate(block.theta_gate) * (1 - gate(block.eta_gate)), rtol=1e-5)
    np.testing.assert_allclose(result["eta"][index], gate(block.eta_gate), rtol=1e-5)
    np.testing.assert_allclose(result["alpha"][index], gate(block.alpha_gate), rtol=1e-5)
    # Surprise of the first chunk: the gradient norm of Eq. 12 at the initial weights W_0
    first_chunk = jnp.asarray(result["memory_input"][index][None, :CHUNK])
    _, k, v, *_ = block.memory_inputs(first_chunk, block.init_cache(1).get("conv"))
    w0 = tuple(w[...] for w in block.initial_weights)
    loss, norm = eq12_loss_and_gradient_norm()(w0, np.asarray(k)[0], np.asarray(v)[0])
    np.testing.assert_allclose(result["surprise"][index, :, :CHUNK], norm, rtol=1e-4)
    np.testing.assert_allclose(result["loss_chunk_start"][index, :, :CHUNK], loss, rtol=1e-4)
  assert np.all(result["loss_before"] >= 0) and np.all(np.isfinite(result["surprise"]))
  # Retention of position 5: 1 there, NaN before, decaying after
  retention = result["retention"]
  assert np.isnan(retention[..., :5]).all() and np.all(retention[..., 5] == 1.0)
  assert np.all(np.diff(retention[..., 5:], axis=-1) <= 0)


def test_one_layer_can_be_selected_and_models_without_memory_are_refused():
  model, _, _, every = traced("lmm")
  only = traces.memory_traces(model, TOKENS[:LENGTH], layer=1)
  np.testing.assert_array_equal(only["layer"], [1])
  np.testing.assert_allclose(only["surprise"][0], every["surprise"][1], rtol=1e-6)
  with pytest.raises(ValueError, match="layers \\[5\\] hold no memory"):
    traces.memory_traces(model, TOKENS[:LENGTH], layer=5)
  with pytest.raises(ValueError, match="one sequence"):
    traces.memory_traces(model, np.stack([TOKENS, TOKENS]))
  transformer = models.build_model(tiny_config("transformer"), nnx.Rngs(0))
  with pytest.raises(ValueError, match="no neural memory"):
    traces.memory_traces(transformer, TOKENS)


# -- plots and the command line -------------------------------------------------------


def test_plot_and_command_line_write_a_png_and_the_arrays(tmp_path, monkeypatch):
  from titans_jax import train

  # Given a traced model
  model, _, _, result = traced("lmm")
  # When its traces are plotted with a needle span
  png = traces.plot_traces(result, str(tmp_path / "plot.png"), tokens=TOKENS[:LENGTH],
                           needle_span=(6, 11))
  # Then a PNG is written
  with open(png, "rb") as handle:
    assert handle.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 10_000
  # When the CLI traces a 24-character text with a "trained" workdir that loads the model
  config = ml_collections.ConfigDict({"model": {"variant": "lmm"}, "seed": 0,
                                      "data": {"seq_len": LENGTH}})
  monkeypatch.setattr(train, "load_model", lambda workdir, step=None: (model, config, 3))
  plotted = {}
  monkeypatch.setattr(traces, "plot_traces", lambda result, path, **kwargs: plotted.update(kwargs))
  out = tmp_path / "cli" / "traces.png"
  traces.main(["--workdir", str(tmp_path), "--text", "The pass key is 1234567.", "--out", str(out),
               "--retention_from", "2"])
  # Then the arrays are saved next to the plot, for the text's tokens
  saved = np.load(tmp_path / "cli" / "traces.npz")
  assert saved["surprise"].shape == (2, 2, LENGTH) and int(saved["retention_from"]) == 2
  assert bytes(saved["tokens"].astype(np.uint8)) == b"The pass key is 1234567."
  assert plotted["needle_span"] is None and "lmm step 3" in plotted["title"]
  # And the summary names a head whose memory diverged
  diverged = dict(result, surprise=result["surprise"].copy())
  diverged["surprise"][1, 0, 9:] = np.inf
  summary = traces.summarize(diverged, needle_span=(6, 11)).splitlines()
  assert len(summary) == 2 and "needle/elsewhere" in summary[0]
  assert "diverges" not in summary[0] and "head 0 diverges: non-finite from position 9" in summary[1]


def test_needle_sample_gives_the_needle_span():
  config = ml_collections.ConfigDict({"seed": 0})
  inputs, span, answer_start = traces._needle_inputs(config, 256, 0.5, "passkey", "noise", 0)
  needle = bytes(inputs[span[0]:span[1]].astype(np.uint8)).decode()
  answer = bytes(inputs[answer_start:].astype(np.uint8)).decode()
  assert needle.startswith(" The pass key is ") and needle.endswith("is the pass key.")
  assert answer and answer in needle
