"""Huge pages for the host allocator: the environment children get, and the entry point's
one-time re-exec (titans_jax.host_malloc)."""

import os
import subprocess
import sys

import pytest

from titans_jax import host_malloc

needs_huge_pages = pytest.mark.skipif(not host_malloc.available(),
                                      reason="needs glibc >= 2.35 and transparent huge pages")


@pytest.fixture
def hugepages_available(monkeypatch):
  monkeypatch.setattr(host_malloc, "available", lambda: True)


def test_environment_adds_the_tunable_and_keeps_others(hugepages_available):
  env = host_malloc.environment({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env["PATH"] == "/bin"
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert host_malloc.environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_environment_keeps_the_users_own_setting(hugepages_available):
  env = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
  assert host_malloc.environment(env) == env


def test_switched_off_or_unavailable_leaves_the_environment_alone(monkeypatch):
  monkeypatch.setattr(host_malloc, "available", lambda: True)
  assert "GLIBC_TUNABLES" not in host_malloc.environment({host_malloc.SWITCH: "0"})
  monkeypatch.setattr(host_malloc, "available", lambda: False)
  assert "GLIBC_TUNABLES" not in host_malloc.environment({})


def test_glibc_version_is_read_or_none():
  version = host_malloc.glibc_version()
  assert version is None or (len(version) == 2 and version >= (2, 0))


SCRIPT = """
import os, sys
with open(sys.argv[1], "a") as handle:
  handle.write(os.environ.get("GLIBC_TUNABLES", "-") + "\\n")
from titans_jax import host_malloc
host_malloc.reexec_with_huge_pages()
print("args", sys.argv[1:])
"""


def _starts(tmp_path, env):
  """Runs SCRIPT under env; the GLIBC_TUNABLES each start of it saw."""
  log = tmp_path / "starts.txt"
  done = subprocess.run([sys.executable, "-c", SCRIPT, str(log), "--flag=x"], capture_output=True,
                        text=True, timeout=120, env=env)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == f"args ['{log}', '--flag=x']"  # same arguments after the exec
  return log.read_text().split()


@needs_huge_pages
def test_reexec_restarts_once_with_huge_pages(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_malloc.SWITCH)}
  assert _starts(tmp_path, env) == ["-", "glibc.malloc.hugetlb=1"]


def test_reexec_is_a_no_op_when_switched_off(tmp_path):
  env = {**os.environ, host_malloc.SWITCH: "0"}
  assert _starts(tmp_path, env) == [os.environ.get("GLIBC_TUNABLES", "-")]
