"""Runs one benchmark measurement in its own subprocess: its peak resident memory is its
own, a run past a memory cap or a time limit is stopped and reported, and the worker's
result comes back from a `RESULT {json}` line on its stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def run_worker(arguments: list[str], *, timeout: float, memory_cap_gb: float,
               env: dict | None = None) -> dict:
  """python <arguments...> as a child; returns its RESULT dict plus peak_rss_gb and error.

  Every child, ours or a peer's, starts with the same allocator environment: huge pages
  for malloc where available (`titans_jax.host_malloc`; TITANS_HUGE_PAGES=0: off)."""
  import psutil

  from titans_jax import host_malloc

  env = dict(host_malloc.environment(env), PYTHONUNBUFFERED="1")
  child = subprocess.Popen([sys.executable] + arguments, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
  process, peak, error, start = psutil.Process(child.pid), 0, None, time.time()
  while child.poll() is None:
    try:
      peak = max(peak, process.memory_info().rss)
    except psutil.Error:
      pass
    if peak > memory_cap_gb * 2**30:
      child.kill()
      error = f"OOM (> {memory_cap_gb:g} GB)"
    elif time.time() - start > timeout:
      child.kill()
      error = f"timeout (> {timeout:g} s)"
    time.sleep(0.05)
  stdout, stderr = child.communicate()
  result = parse_result(stdout)
  if error is None and result is None:
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    error = "OOM" if "MemoryError" in stderr or child.returncode == -9 else f"failed: {tail[0][:160]}"
  result = result if error is None else {}
  return {**result, "peak_rss_gb": peak / 2**30, "error": error}


def parse_result(stdout: str) -> dict | None:
  """The worker's `RESULT {json}` line, or None when it printed none."""
  lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
  return json.loads(lines[0][7:]) if lines else None


def ratio_summary(ratios: list[float], label: str) -> str:
  """The closing line of a paired A/B: the median of the per-round ratios and their range."""
  import statistics

  return (f"median ratio ({label}) over {len(ratios)} rounds: {statistics.median(ratios):.3f}  "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")
