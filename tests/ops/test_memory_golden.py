"""Golden vectors of `shared/golden/memory` (independent float64 reference).

The folder is read from TITANS_GOLDEN_DIR when set, so other vector sets of the
same format are checked the same way.
"""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from titans_jax.ops import MemoryConfig, init_memory_state, memory_apply, memory_apply_reference

DEFAULT_DIR = os.path.join(os.path.dirname(__file__), "..", "data", "golden", "memory")
GOLDEN_DIR = os.environ.get("TITANS_GOLDEN_DIR", DEFAULT_DIR)
CASES = sorted(glob.glob(os.path.join(GOLDEN_DIR, "*.npz")))
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def test_golden_folder_has_cases():
  assert CASES, f"no *.npz golden vectors in {GOLDEN_DIR}"


def _load(path):
  data = np.load(path)
  meta = json.loads(str(data["meta_json"]))
  config = MemoryConfig(depth=meta["depth"], chunk_size=meta["chunk_size"],
                        activation=meta["activation"], residual=meta["residual"],
                        retrieval=meta["retrieval"])
  return data, meta, config


def _run(op, config, data, meta, dtype, split):
  weights = [jnp.asarray(data[f"w0_{layer}"], dtype) for layer in range(meta["depth"])]
  state = init_memory_state(weights, data["q"].shape[0])
  inputs = [jnp.asarray(data[name], dtype) for name in ("q", "k", "v", "theta", "eta", "alpha")]
  if split is None:
    return op(config, state, *inputs)
  first, state = op(config, state, *[x[:, :, :split] for x in inputs])
  second, state = op(config, state, *[x[:, :, split:] for x in inputs])
  return jnp.concatenate([first, second], axis=2), state


def _assert_close(name, actual, expected, tolerance):
  actual = np.asarray(actual, np.float64)
  scale = max(np.abs(expected).max(), 1e-12)
  error = np.abs(actual - expected).max() / scale
  assert error <= tolerance, f"{name}: max error {error:.3g} relative to max |value|, > {tolerance}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", [memory_apply, memory_apply_reference], ids=["fast", "reference"])
@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[:-4] for p in CASES])
def test_golden(path, op, dtype):
  data, meta, config = _load(path)
  splits = [None] + ([meta["split"]] if meta.get("split") else [])
  with jax.enable_x64(dtype == "float64"):
    for split in splits:
      y, state = _run(op, config, data, meta, dtype, split)
      label = f"{meta['name']} split={split}"
      _assert_close(f"{label} y", y, data["y"], TOLERANCE[dtype])
      for layer in range(meta["depth"]):
        _assert_close(f"{label} w_final_{layer}", state.weights[layer],
                      data[f"w_final_{layer}"], TOLERANCE[dtype])
        _assert_close(f"{label} s_final_{layer}", state.momentum[layer],
                      data[f"s_final_{layer}"], TOLERANCE[dtype])
      assert state.position == data["q"].shape[2]
