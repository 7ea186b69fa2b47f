"""Test-wide settings. Tests compile many tiny XLA programs; at these sizes the compiler's
optimisations cost more than they save, so the CPU backend runs at level 0 without LLVM's
expensive passes, with the classic (non-MLIR) elementwise emitters and the plain scheduler
(same semantics; together about 2x faster compiles), each where this jaxlib accepts it.
Set before JAX starts its backend."""

import os
import re
import subprocess
import sys

import pytest

_TEST_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
               "--xla_cpu_use_fusion_emitters=false",
               "--xla_cpu_enable_concurrency_optimized_scheduler=false")


def _accepted_by_xla(flags):
  """The flags this jaxlib accepts. XLA aborts on an unknown one, and the CPU flags change
  between releases (jax 0.10 here, 0.11 on accelerator machines); a flag's name can stay in
  the binary after the flag is gone (--xla_cpu_use_fusion_emitters in jax 0.11), so one
  short process starts the backend and names the ones it refuses."""
  flags = list(flags)
  while flags:
    env = dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                           capture_output=True, text=True, timeout=300)
    if probe.returncode == 0:
      return flags
    unknown = re.search(r"Unknown flags? in XLA_FLAGS: (.*)", probe.stderr)
    refused = set(unknown.group(1).split()) & set(flags) if unknown else set()
    if not refused:  # the backend fails for another reason: the tests will say why
      return []
    flags = [f for f in flags if f not in refused]
  return flags


_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
  os.environ["XLA_FLAGS"] = " ".join([_flags] + _accepted_by_xla(_TEST_FLAGS)).strip()

# Compiled programs are cached on disk for the session (shared by the xdist workers and
# the subprocesses tests start): the same tiny model trained by several tests compiles once.
# The process that made the folder (xdist's controller; the workers inherit the variable)
# removes it when the session ends: ~65 MB a run would otherwise pile up in the temp dir.
_own_cache_dir = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile

  _own_cache_dir = tempfile.mkdtemp(prefix="titans_jax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _own_cache_dir
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
  if _own_cache_dir is not None:
    import shutil

    shutil.rmtree(_own_cache_dir, ignore_errors=True)


def write_hub_repo(repo, splits):
  """A local copy of a Hugging Face hub dataset repository at `repo`, laid out as the hub
  does it: README.md whose YAML front matter declares each config's split files, and one
  parquet file per (config, split). splits: {(config, split): [row dict, ...]}, rows with
  the hub's field names and types (nested dicts and lists become parquet structs / lists)."""
  import json

  import pyarrow as pa
  import pyarrow.parquet as pq

  configs = {}
  for (config, split), rows in splits.items():
    folder = os.path.join(repo, config)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{split}-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    configs.setdefault(config, []).append(split)
  lines = ["---", "configs:"]  # JSON strings are YAML strings
  for config, names in configs.items():
    lines += [f"- config_name: {json.dumps(config)}", "  data_files:"]
    for split in names:
      lines += [f"  - split: {json.dumps(split)}", f"    path: {json.dumps(f'{config}/{split}-*')}"]
  with open(os.path.join(repo, "README.md"), "w", encoding="utf-8") as handle:
    handle.write("\n".join(lines + ["---", ""]))
  return str(repo)


@pytest.fixture
def local_hub(monkeypatch, tmp_path):
  """The real Hugging Face `datasets` kept off the network and out of ~/.cache: offline
  (the environment for what starts later, the flags `datasets` read at import for this
  process) with its cache under tmp_path. Returns write_hub_repo, which makes the local
  repository copies it reads (what --hub_root points at)."""
  import datasets
  import huggingface_hub

  for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    monkeypatch.setenv(name, "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
  cache = tmp_path / "hf_cache"
  monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
  monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
  monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
  monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")
  return write_hub_repo


@pytest.fixture(scope="module", autouse=True)
def _free_compiled_programs():
  """Drops the in-memory compiled programs after each test file (the disk cache keeps
  them). Each XLA:CPU executable holds tens of memory mappings and one worker compiles
  thousands: left cached they climbed to ~31K of the kernel's default 65,530
  (vm.max_map_count), past which LLVM fails with 'Cannot allocate memory'."""
  yield
  import jax  # here, not at the top: XLA_FLAGS above must be set before JAX starts

  jax.clear_caches()
