"""Runs titans_jax.main as N processes on this machine, joined by jax.distributed.

  python launch/local.py --processes=2 -- --config=experiments/t1_language_modeling.py:model=mag,runlocal --workdir=/tmp/run

Each process gets --coordinator_address/--num_processes/--process_id (CPU
collectives over gloo) and its own log prefix; the exit code is the first
non-zero one. The tests use it to check multi-process training on localhost.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _relay(prefix: str, stream, sink) -> None:
  for line in iter(stream.readline, ""):
    sink.write(f"[{prefix}] {line}")
    sink.flush()


def launch(main_args: list[str], *, processes: int, timeout: float | None = None,
           env: dict | None = None) -> int:
  address = f"127.0.0.1:{free_port()}"
  env = dict(os.environ if env is None else env)
  env.setdefault("JAX_PLATFORMS", "cpu")
  children, relays = [], []
  for index in range(processes):
    command = [sys.executable, "-m", "titans_jax.main", *main_args,
               f"--coordinator_address={address}", f"--num_processes={processes}",
               f"--process_id={index}"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    relay = threading.Thread(target=_relay, args=(f"p{index}", child.stdout, sys.stdout),
                             daemon=True)
    relay.start()
    children.append(child)
    relays.append(relay)
  codes = []
  try:
    for child in children:
      codes.append(child.wait(timeout=timeout))
  except subprocess.TimeoutExpired:
    for child in children:
      child.kill()
    return 124
  finally:
    for relay in relays:
      relay.join(timeout=5)
  return next((code for code in codes if code), 0)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--timeout", type=float, default=None)
  parser.add_argument("main_args", nargs=argparse.REMAINDER, help="-- then titans_jax.main flags")
  args = parser.parse_args()
  main_args = args.main_args[1:] if args.main_args[:1] == ["--"] else args.main_args
  sys.exit(launch(main_args, processes=args.processes, timeout=args.timeout))


if __name__ == "__main__":
  main()
