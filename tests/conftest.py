"""Test-wide settings. Tests compile many tiny XLA programs; at these sizes the compiler's
optimisations cost more than they save, so the CPU backend runs at level 0 without LLVM's
expensive passes, with the classic (non-MLIR) elementwise emitters and the plain scheduler
(same semantics; together about 2x faster compiles). Set before JAX starts its backend."""

import glob
import importlib.util
import mmap
import os

import pytest

_TEST_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
               "--xla_cpu_use_fusion_emitters=false",
               "--xla_cpu_enable_concurrency_optimized_scheduler=false")


def _known_to_xla(flag):
  """Whether this jaxlib knows the flag: XLA aborts on an unknown one, and the CPU flags
  change between releases (jax 0.10 here, 0.11 on accelerator machines)."""
  name = flag.lstrip("-").split("=", 1)[0].encode()
  spec = importlib.util.find_spec("jaxlib")
  for path in glob.glob(os.path.join(os.path.dirname(spec.origin), "*.so")):
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
      if data.find(name) >= 0:
        return True
  return False


_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
  os.environ["XLA_FLAGS"] = " ".join([_flags] + [f for f in _TEST_FLAGS if _known_to_xla(f)]).strip()

# Compiled programs are cached on disk for the session (shared by the xdist workers and
# the subprocesses tests start): the same tiny model trained by several tests compiles once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile

  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="titans_jax_test_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


class _Rows(list):
  """What the harnesses use of a `datasets.Dataset`: len, iteration over dicts, select."""

  def select(self, indices):
    return _Rows(self[i] for i in indices)


@pytest.fixture
def fake_hub(monkeypatch):
  """A stand-in `datasets` module (the real one is an optional extra, not a test
  dependency, and the hub needs the network): load_dataset(path, name, split) reads
  <path>/<name>/<split>.jsonl and records each call in .calls."""
  import json
  import sys
  import types

  module = types.ModuleType("datasets")
  module.calls = []

  def load_dataset(path, name=None, split=None):
    module.calls.append((path, name, split))
    with open(os.path.join(path, name or "default", f"{split}.jsonl")) as handle:
      return _Rows(json.loads(line) for line in handle if line.strip())

  module.load_dataset = load_dataset
  monkeypatch.setitem(sys.modules, "datasets", module)
  return module
