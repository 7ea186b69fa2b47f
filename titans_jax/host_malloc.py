"""Transparent huge pages for the host allocator, for XLA:CPU's per-step buffers.

XLA:CPU allocates every execution's temporaries with malloc. The large ones are fresh
mmaps, so each step faults them in again 4 KiB at a time: on 2 cores that was ~0.2 s of
kernel time per 1.0 s step of the benchmark's memory layer at 2K tokens. With
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks the kernel for
transparent huge pages (2 MiB, madvise), 512x fewer faults; measured in
`benchmarks/memory_benchmark.py`, which gives the same environment to every worker, ours
and the peer's. glibc reads tunables only when a process starts, so this module builds an
environment for child processes, and `reexec_with_huge_pages` restarts the main entry
point once with it. `TITANS_HUGE_PAGES=0` turns both off.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
SWITCH = "TITANS_HUGE_PAGES"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the C library when it is glibc, else None."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, OSError, ValueError):
    return None


def available() -> bool:
  """glibc >= 2.35 (the tunable) on a kernel whose transparent huge pages are not off."""
  version = glibc_version()
  if version is None or version < (2, 35):
    return False
  try:
    with open(_THP_SETTING) as handle:
      return "[never]" not in handle.read()
  except OSError:
    return False


def enabled(env=None) -> bool:
  """Whether huge pages are wanted: available, and not switched off by TITANS_HUGE_PAGES=0."""
  env = os.environ if env is None else env
  return env.get(SWITCH, "1") != "0" and available()


def environment(env=None) -> dict:
  """A copy of env (default os.environ) whose GLIBC_TUNABLES asks for huge pages.

  Other tunables are kept; a value the user gave glibc.malloc.hugetlb is never replaced.
  Unchanged where huge pages are not enabled."""
  env = dict(os.environ if env is None else env)
  tunables = env.get("GLIBC_TUNABLES", "")
  if not enabled(env) or any(item.split("=")[0] == TUNABLE for item in tunables.split(":")):
    return env
  env["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))
  return env


def reexec_with_huge_pages() -> None:
  """Restart this Python process with the huge-page environment, once, if it lacks it.

  For entry points (`python -m titans_jax.main`), before any work: the same interpreter,
  arguments and file descriptors. A no-op when it is already set, not enabled, or the
  original command line is unknown."""
  env = environment()
  if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
    return
  argv = getattr(sys, "orig_argv", None)
  if not argv or not sys.executable:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, argv, env)
