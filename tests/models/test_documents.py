"""Packed rows with document resets: each document reads exactly as it does alone,
and nothing of one document reaches another, for every variant (one pass, as training runs)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from titans_jax import models
from tests.models.test_models import VARIANTS, tiny_config, tokens

LENGTH = 24
DOCUMENT = 8
# Documents start where the memory's chunk grid (4) and MAC's segments (8) start fresh.
STARTS = ([8, 16], [8, 16])


def _segments(starts):
  segments = np.zeros((len(starts), LENGTH), np.int32)
  for row, row_starts in enumerate(starts):
    for start in row_starts:
      segments[row, start:] += 1
  return jnp.asarray(segments)


@functools.lru_cache(maxsize=None)
def _model(variant):
  model = models.build_model(tiny_config(variant, segment_len=8), nnx.Rngs(0))
  return model, nnx.jit(lambda m, x, s: m(x, segments=s)), nnx.jit(lambda m, x: m(x))


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_document_reads_as_alone(variant):
  model, packed_forward, forward = _model(variant)
  x = tokens(5)
  packed = np.asarray(packed_forward(model, x, _segments(STARTS)))
  # Every document alone, as one batch of rows.
  alone = np.asarray(forward(model, x.reshape(-1, DOCUMENT))).reshape(packed.shape)
  np.testing.assert_allclose(packed, alone, rtol=2e-5, atol=2e-5)
  # The resets matter: one document per row reads the later documents differently.
  one_document = np.asarray(packed_forward(model, x, jnp.zeros_like(x)))
  assert np.abs(packed - one_document)[:, DOCUMENT:].max() > 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_document_sees_another(variant):
  # Documents anywhere (not on the chunk grid): a change in one never reaches the next.
  model, packed_forward, _ = _model(variant)
  segments = _segments([[7], [3, 17]])
  x = tokens(6)
  changed = x.at[0, 2].set((x[0, 2] + 5) % 19).at[1, 16].set((x[1, 16] + 5) % 19)
  a = np.asarray(packed_forward(model, x, segments))
  b = np.asarray(packed_forward(model, changed, segments))
  later = np.asarray(segments) > np.asarray(segments)[:, :1] + np.array([[0], [1]])
  np.testing.assert_array_equal(a[later], b[later])
  assert np.abs(a - b).max() > 1e-6


def test_bad_segments():
  model = _model("mag")[0]
  with pytest.raises(ValueError, match="segments have shape"):
    model(tokens(0), segments=jnp.zeros((2, 5), jnp.int32))
