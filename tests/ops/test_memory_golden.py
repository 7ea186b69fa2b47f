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


# Options a vector set may state in meta_json beyond the required ones; absent keys take
# MemoryConfig's defaults (a set made for another memory variant is checked as it says).
OPTIONAL_META = ("activation", "residual", "retrieval", "momentum", "forgetting", "gate_mode")


def _load(path):
  data = np.load(path)
  meta = json.loads(str(data["meta_json"]))
  if meta.get("depth") is None:  # the layers the file holds
    meta["depth"] = sum(1 for name in data.files if name.startswith("w0_"))
  meta.setdefault("name", os.path.basename(path)[:-4])
  options = {key: meta[key] for key in OPTIONAL_META if meta.get(key) is not None}
  config = MemoryConfig(depth=meta["depth"], chunk_size=meta["chunk_size"], **options)
  return data, meta, config


def _split_points(meta):
  """[] (one call), or the cut points of chained calls: `split` is one int or a list."""
  split = meta.get("split")
  if split is None:
    return []
  return sorted(split) if isinstance(split, list) else [split]


def _run(op, config, data, meta, dtype, cuts):
  weights = [jnp.asarray(data[f"w0_{layer}"], dtype) for layer in range(meta["depth"])]
  state = init_memory_state(weights, data["q"].shape[0])
  inputs = [jnp.asarray(data[name], dtype) for name in ("q", "k", "v", "theta", "eta", "alpha")]
  bounds = [0] + list(cuts) + [inputs[0].shape[2]]
  outputs = []
  for start, stop in zip(bounds[:-1], bounds[1:]):
    y, state = op(config, state, *[x[:, :, start:stop] for x in inputs])
    outputs.append(y)
  return jnp.concatenate(outputs, axis=2), state


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
  cuts = _split_points(meta)
  cut_sets = [[]] + ([cuts] if cuts else [])
  with jax.enable_x64(dtype == "float64"):
    for cuts in cut_sets:
      y, state = _run(op, config, data, meta, dtype, cuts)
      label = f"{meta['name']} split={cuts or None}"
      _assert_close(f"{label} y", y, data["y"], TOLERANCE[dtype])
      for layer in range(meta["depth"]):
        _assert_close(f"{label} w_final_{layer}", state.weights[layer],
                      data[f"w_final_{layer}"], TOLERANCE[dtype])
        _assert_close(f"{label} s_final_{layer}", state.momentum[layer],
                      data[f"s_final_{layer}"], TOLERANCE[dtype])
      assert state.position == data["q"].shape[2]


def test_vector_sets_may_state_more_options(tmp_path):
  """A set in the same format made for another variant (momentum off, chunk gates, several
  cuts, no depth key) is loaded with those options: a file written from the reference
  with them passes, and fails once an option is dropped."""
  rng = np.random.default_rng(5)
  batch, heads, length, dims = 1, 2, 11, [4, 6, 3]
  meta = {"chunk_size": 3, "activation": "gelu", "momentum": False, "gate_mode": "chunk",
          "split": [2, 7]}
  arrays = {name: rng.normal(size=(batch, heads, length, dims[-1] if name == "v" else dims[0]))
            for name in ("q", "k", "v")}
  arrays.update(theta=rng.uniform(0, 0.5, (batch, heads, length)),
                eta=rng.uniform(0, 1, (batch, heads, length)),
                alpha=rng.uniform(0, 0.2, (batch, heads, length)))
  weights = [rng.normal(size=(heads, a, b)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
  with jax.enable_x64(True):
    config = MemoryConfig(depth=2, chunk_size=3, activation="gelu", momentum=False,
                          gate_mode="chunk")
    state = init_memory_state([jnp.asarray(w) for w in weights], batch)
    y, final = memory_apply_reference(config, state, *[jnp.asarray(arrays[n]) for n in
                                                       ("q", "k", "v", "theta", "eta", "alpha")])
    files = dict(arrays, y=np.asarray(y), meta_json=json.dumps(meta))
    for layer in range(2):
      files.update({f"w0_{layer}": weights[layer], f"w_final_{layer}": np.asarray(final.weights[layer]),
                    f"s_final_{layer}": np.asarray(final.momentum[layer])})
    np.savez(tmp_path / "variant.npz", **files)
    test_golden(str(tmp_path / "variant.npz"), memory_apply, "float64")
    meta.pop("gate_mode")
    np.savez(tmp_path / "dropped.npz", **dict(files, meta_json=json.dumps(meta)))
    with pytest.raises(AssertionError, match="max error"):
      test_golden(str(tmp_path / "dropped.npz"), memory_apply, "float64")
