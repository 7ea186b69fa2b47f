"""Document boundaries inside a packed row, for models that reset at each document.

A packed training row holds several documents back to back. With `segments` (the
document number of every input token), each document is read as if it were alone:
the memory goes back to the state a fresh stream starts from, attention sees only
the document's own keys (and what a fresh stream's cache holds: the persistent
tokens), RoPE and the window count positions from the document's start, and the
short convolution restarts from its fresh state. A layer's reset target is the cache
the one-pass forward starts from, so this holds for one pass from a fresh cache
(`TitansLM.__call__(inputs, segments=...)`), the way training runs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Documents(NamedTuple):
  ids: jax.Array      # [B, T] int32: document number of each token
  starts: jax.Array   # [B, T] bool: the token begins a new document (never the row's first)
  offsets: jax.Array  # [B, T] int32: tokens since its document began (the row's start for the first)

  def slice(self, start: int, stop: int) -> "Documents":
    return Documents(*(a[:, start:stop] for a in self))


def from_segments(segments) -> Documents:
  """segments [B, T] integer document numbers (equal for the tokens of one document)."""
  segments = jnp.asarray(segments)
  if segments.ndim != 2 or not jnp.issubdtype(segments.dtype, jnp.integer):
    raise ValueError(f"segments have shape {tuple(segments.shape)} and dtype {segments.dtype}; "
                     "expected integer document numbers [batch, length]")
  segments = segments.astype(jnp.int32)
  starts = jnp.concatenate([jnp.zeros_like(segments[:, :1], bool),
                            segments[:, 1:] != segments[:, :-1]], axis=1)
  index = jnp.broadcast_to(jnp.arange(segments.shape[1], dtype=jnp.int32), segments.shape)
  first = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
  return Documents(segments, starts, index - first)
