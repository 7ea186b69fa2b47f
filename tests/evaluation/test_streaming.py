"""Long-document streaming: per-position losses equal one pass, the state can be saved,
loaded and reset, and a state never loads into a model it does not belong to."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from titans_jax import models
from titans_jax.evaluation import streaming
from titans_jax.models import state_io

VOCAB = 17


def tiny_model(variant, seed=0, **overrides):
  fields = dict(variant=variant, vocab_size=VOCAB, width=16, num_layers=1, num_heads=2, window=5,
                segment_len=6, memory_chunk=4, num_persistent=2, memory_expansion=2.0)
  fields.update(overrides)
  return models.build_model(models.ModelConfig(**fields), nnx.Rngs(seed))


def one_pass_nll(model, tokens):
  log_probs = jax.nn.log_softmax(model(jnp.asarray(tokens[:, :-1])), axis=-1)
  return -np.asarray(jnp.take_along_axis(log_probs, jnp.asarray(tokens[:, 1:, None]), -1)[..., 0])


# MAC streams eagerly here (slow to run); its pieces == one pass is tests/models' and the
# save / load test below runs it through this harness.
@pytest.mark.parametrize("variant", ["lmm"])  # every jitted variant takes the same path
def test_streamed_losses_equal_one_pass(variant):
  # Given a document longer than windows, segments and chunks
  model = tiny_model(variant)
  tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 31), 0, VOCAB))
  # When it is streamed in pieces of 7 (a shorter last piece included)
  result = streaming.stream_losses(model, tokens, piece_len=7)
  # Then every position's loss equals the one-pass loss
  np.testing.assert_allclose(result.nll, one_pass_nll(model, tokens), rtol=1e-5, atol=1e-5)
  assert result.nll.shape == (2, 30) and result.tokens_per_second > 0


def test_the_loss_curve_partitions_the_positions():
  nll = np.random.default_rng(0).random((3, 1000)).astype(np.float32)
  ends, means = streaming.loss_curve(nll, bins=8)
  assert ends[-1] == 1000 and (np.diff(ends) > 0).all()
  widths = np.diff(np.concatenate([[0], ends]))
  np.testing.assert_allclose((means * widths).sum() / 1000, nll.mean(), rtol=1e-6)


# MAC: segment buffers and a Python-int position; transformer: a cache that grows.
@pytest.mark.parametrize("variant", ["mac", "transformer"])
def test_a_saved_state_continues_the_document_exactly(variant, tmp_path):
  # Given a document streamed in two halves, the state saved and loaded between them
  model = tiny_model(variant)
  tokens = np.asarray(jax.random.randint(jax.random.key(2), (1, 25), 0, VOCAB))
  first = streaming.stream_losses(model, tokens[:, :14], piece_len=14)
  path = state_io.save_state(model, first.cache, str(tmp_path / "doc.state.npz"))
  loaded = state_io.load_state(model, path)
  second = streaming.stream_losses(model, tokens[:, 13:], piece_len=12, cache=loaded)
  # Then the losses are those of one uninterrupted pass
  both = np.concatenate([first.nll, second.nll], axis=1)
  np.testing.assert_allclose(both, one_pass_nll(model, tokens), rtol=1e-5, atol=1e-5)


def test_reset_gives_the_fresh_state():
  model = tiny_model("lmm")
  tokens = np.ones((2, 9), np.int64)
  used = streaming.stream_losses(model, tokens, piece_len=9).cache
  fresh = state_io.reset_state(model, used)
  for got, want in zip(jax.tree.leaves(fresh), jax.tree.leaves(model.init_cache(2))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_state_from_another_model_or_a_broken_file_is_refused(tmp_path):
  model = tiny_model("lmm")
  path = state_io.save_state(model, model.init_cache(1), str(tmp_path / "lmm.npz"))
  with pytest.raises(ValueError, match="belongs to another model"):
    state_io.load_state(tiny_model("lmm", width=24), path)
  broken = tmp_path / "broken.npz"
  broken.write_bytes(open(path, "rb").read()[:100])
  with pytest.raises(ValueError, match="not a readable state file"):
    state_io.load_state(model, str(broken))
  with pytest.raises(ValueError, match="no state file"):
    state_io.load_state(model, str(tmp_path / "missing.npz"))


def test_bad_documents_fail_clearly():
  model = tiny_model("lmm")
  with pytest.raises(ValueError, match="nothing to predict"):
    streaming.stream_losses(model, [3])
  with pytest.raises(ValueError, match=r"expected ids in \[0, 17\)"):
    streaming.stream_losses(model, [3, 40])
  with pytest.raises(ValueError, match="piece_len=0"):
    streaming.stream_losses(model, [3, 4], piece_len=0)


def test_a_packed_stream_with_resets_reads_each_document_alone():
  # Given two documents packed into one stream
  model = tiny_model("lmm")
  first, second = np.arange(1, 12) % VOCAB, (np.arange(3, 17) * 5) % VOCAB
  packed = np.concatenate([first, second])
  # When it is streamed with a reset where the second document begins
  nll = streaming.stream_documents(model, packed, [len(first)], piece_len=5)
  # Then the second document's losses are those of reading it alone, and the boundary
  # token is scored at the end of the first document
  alone = streaming.stream_losses(model, second, piece_len=5).nll[0]
  np.testing.assert_allclose(nll[len(first):], alone, rtol=1e-5, atol=1e-5)
  head = streaming.stream_losses(model, packed[:len(first) + 1], piece_len=5).nll[0]
  np.testing.assert_allclose(nll[:len(first)], head, rtol=1e-5, atol=1e-5)
  assert nll.shape == (len(packed) - 1,)
