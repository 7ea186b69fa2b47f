"""Saving, loading and resetting a model's streaming state (memory weights and momentum,
attention caches): stop a long document today, continue it tomorrow, or start the
next document from the learned initial memory.

    state_io.save_state(model, cache, "doc.state.npz")
    cache = state_io.load_state(model, "doc.state.npz")     # checked against this model
    cache = state_io.reset_state(model, cache)             # W_0, momentum 0, empty caches

A state belongs to one model structure: loading checks every array's path, shape and
dtype against the state this model would make, and names the first that differs.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

_META = "__titans_state__"


def _flatten(cache) -> dict:
  leaves, _ = jax.tree_util.tree_flatten_with_path(cache)
  # Through jnp first: Python-int positions become the int32 arrays a fresh state compares to.
  return {jax.tree_util.keystr(path): np.asarray(jnp.asarray(leaf)) for path, leaf in leaves}


def _batch_size(cache) -> int:
  shapes = [np.shape(leaf) for leaf in jax.tree.leaves(cache) if np.ndim(leaf) >= 2]
  if not shapes:
    raise ValueError("this state holds no batched arrays; expected a cache from model.init_cache")
  return int(shapes[0][0])


def _fits(fresh: tuple, stored: tuple) -> bool:
  """A stored array fits the fresh one's shape; an axis that is 0 when fresh (a growing
  full-attention cache, Transformer++) may have grown to any length."""
  return len(fresh) == len(stored) and all(a == b or a == 0 for a, b in zip(fresh, stored))


def save_state(model, cache, path: str) -> str:
  """Writes `cache` (from model.init_cache / model.stream) to an .npz file, atomically."""
  arrays = _flatten(cache)
  meta = {"variant": model.config.variant, "batch_size": _batch_size(cache),
          "config": dataclasses.asdict(model.config)}
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp.npz")
  np.savez(temporary, **arrays, **{_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
  os.replace(temporary, path)  # a crash mid-write never leaves a half state under `path`
  return path


def load_state(model, path: str):
  """The cache saved at `path`, after checking that it fits `model`."""
  if not os.path.isfile(path):
    raise ValueError(f"no state file at {path}; expected a file written by save_state")
  try:
    with np.load(path) as stored:
      arrays = {name: stored[name] for name in stored.files}
  except Exception as error:  # truncated or not an npz at all
    raise ValueError(f"{path} is not a readable state file ({error}); expected one written by "
                     "save_state") from error
  if _META not in arrays:
    raise ValueError(f"{path} holds no titans_jax state description; expected a save_state file")
  meta = json.loads(arrays.pop(_META).tobytes().decode())
  template = model.init_cache(int(meta["batch_size"]))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  expected = {jax.tree_util.keystr(p): leaf for p, leaf in leaves}
  origin = f"saved from a {meta['variant']!r} model"
  for name in sorted(set(expected) | set(arrays)):
    if name not in arrays:
      raise ValueError(f"state {path} ({origin}) lacks {name}, which this {model.config.variant!r} "
                       "model's state has; it belongs to another model")
    if name not in expected:
      raise ValueError(f"state {path} ({origin}) holds {name}, which this {model.config.variant!r} "
                       "model's state lacks; it belongs to another model")
    want, got = expected[name], arrays[name]
    if not _fits(np.shape(want), got.shape) or jnp.asarray(want).dtype != got.dtype:
      raise ValueError(f"state {path} ({origin}): {name} is {got.dtype}{list(got.shape)}, this model "
                       f"expects {jnp.asarray(want).dtype}{list(np.shape(want))}; it belongs to "
                       "another model or configuration")
  return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[jax.tree_util.keystr(p)])
                                                for p, _ in leaves])


def reset_state(model, cache=None, batch_size: int | None = None):
  """A fresh state (the learned W_0, zero momentum, empty caches, position 0) for the
  next document, with the batch size of `cache` or `batch_size`."""
  if batch_size is None:
    if cache is None:
      raise ValueError("reset_state needs the cache to replace or a batch_size")
    batch_size = _batch_size(cache)
  return model.init_cache(batch_size)
