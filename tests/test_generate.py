"""Generation: cached decoding equals the uncached forward pass for every variant, the
state stays the same size as the context grows, sampling obeys its settings, and bad
arguments fail before anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from titans_jax import generate, models
from titans_jax.ops.sampling import sample_next, top_p_filter

VARIANTS = ("transformer", "swa", "lmm", "mac", "mag", "mal")
VOCAB = 23


def tiny_model(variant, **overrides):
  fields = dict(variant=variant, vocab_size=VOCAB, width=16, num_layers=1, num_heads=2, window=5,
                segment_len=6, memory_chunk=4, num_persistent=2, memory_expansion=2.0)
  fields.update(overrides)
  return models.build_model(models.ModelConfig(**fields), nnx.Rngs(3))


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_greedy_decoding_equals_the_uncached_forward_pass(variant):
  # Given a prompt that crosses windows, segments and memory chunks
  model = tiny_model(variant)
  prompt = np.asarray(jax.random.randint(jax.random.key(1), (2, 9), 0, VOCAB))
  # When 8 tokens are decoded greedily with the caches carried
  new, logits = generate.generate(model, prompt, 8, return_logits=True)
  # Then a single uncached pass over prompt + generated tokens picks the same tokens
  # from the same logits at every position
  full = np.asarray(model(jnp.asarray(np.concatenate([prompt, new], axis=1))))
  uncached = full[:, prompt.shape[1] - 1:-1]
  np.testing.assert_allclose(logits, uncached, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(new, uncached.argmax(-1))


# One variant per kind of state: full attention's fixed slots, window + memory, MAC's segment.
@pytest.mark.parametrize("variant", ["transformer", "mag", "mac"])
def test_the_decoding_state_does_not_grow_with_the_context(variant):
  # Given a decoder after a prompt
  model = tiny_model(variant)
  decoder = generate.Decoder(model)
  cache = decoder.init_cache(1, max_length=40)
  _, cache = decoder.prefill(np.ones((1, 7), np.int32), cache)
  shapes = lambda tree: [np.shape(x) for x in jax.tree.leaves(tree)]
  before = shapes(cache)
  # When it decodes more tokens through the one compiled step
  token = jnp.zeros((1,), jnp.int32)
  for i in range(8):
    token, _, cache = decoder.step(token, cache, jax.random.key(i))
  # Then every array of its state has the shape it had (constant cost per token)
  assert shapes(cache) == before
  assert decoder._step._cache_size() == 1


def test_sampling_respects_temperature_and_top_p():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  # top_p 0.7 keeps the two tokens whose mass first reaches it
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.7)))[0]
  np.testing.assert_array_equal(kept, [True, True, False, False])
  # a tiny top_p is greedy; temperature 0 is greedy
  keys = jax.random.split(jax.random.key(0), 4000)
  draw = jax.jit(jax.vmap(lambda k, t, p: sample_next(logits, k, t, p)[0], in_axes=(0, None, None)))
  assert set(np.asarray(draw(keys, 1.0, 1e-3)).tolist()) == {0}
  assert set(np.asarray(draw(keys, 0.0, 1.0)).tolist()) == {0}
  # at temperature 1 and top_p 1, draws follow the distribution
  frequencies = np.bincount(np.asarray(draw(keys, 1.0, 1.0)), minlength=4) / 4000
  np.testing.assert_allclose(frequencies, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_sampled_generation_is_reproducible_and_stops_at_eos():
  model = tiny_model("mag")
  decoder = generate.Decoder(model)  # one set of compiled steps for the three runs
  prompt = [1, 2, 3, 4]
  first = generate.generate(model, prompt, 12, temperature=1.0, top_p=0.9, seed=5, decoder=decoder)
  again = generate.generate(model, prompt, 12, temperature=1.0, top_p=0.9, seed=5, decoder=decoder)
  np.testing.assert_array_equal(first, again)
  assert first.shape == (12,) and first.min() >= 0 and first.max() < VOCAB
  eos = int(first[2])
  stopped = generate.generate(model, prompt, 12, temperature=1.0, top_p=0.9, seed=5, eos_id=eos,
                              decoder=decoder)
  end = int(np.argmax(stopped == eos))
  np.testing.assert_array_equal(stopped[:end + 1], first[:end + 1])
  assert (stopped[end:] == eos).all()


@pytest.mark.parametrize("prompt, kwargs, message", [
    ([], {}, "prompt is empty"),
    ([[]], {}, "prompt is empty"),
    ([1, VOCAB], {}, "expected ids in"),
    ([1.5, 2.0], {}, "expected token ids"),
    ([1, 2], {"max_new_tokens": 0}, "max_new_tokens=0"),
    ([1, 2], {"temperature": -1.0}, "temperature=-1.0"),
    ([1, 2], {"top_p": 0.0}, "top_p=0.0"),
    ([1] * 10, {"max_length": 12}, "over max_length=12"),
])
def test_bad_arguments_fail_before_compiling(prompt, kwargs, message):
  model = tiny_model("lmm")
  kwargs = {"max_new_tokens": 4, **kwargs}
  with pytest.raises(ValueError, match=message):
    generate.generate(model, prompt, **kwargs)


def test_a_continuous_input_model_cannot_generate_tokens():
  model = tiny_model("lmm", input_dim=3, output_dim=2)
  with pytest.raises(ValueError, match="generation needs a token LM"):
    generate.generate(model, [1, 2], 4)
