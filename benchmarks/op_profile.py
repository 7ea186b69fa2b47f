"""Where one forward + backward step of the memory op spends its time, per XLA op.

  python benchmarks/op_profile.py                          # 2K, token retrieval, one device
  python benchmarks/op_profile.py --devices=2 --length=8192 --mode=chunk
  python benchmarks/op_profile.py --devices=2 --layer          # the benchmark's whole layer

The benchmark's op step (`memory_benchmark.py --op_only`, its `build_jax_step`: batch 4,
4 heads x 64, depth-2 memory, chunk 64, float32; with --devices the batch rows split over
that many CPU devices; with --layer the whole memory layer, projections included, as
`memory_benchmark.py` times it) runs under `jax.profiler.trace`; the trace's events are
joined with the compiled HLO by instruction name. Printed per device and step: every
matmul (a `dot`, or a fusion holding dots) with its phase (forward, or backward:
`transpose(...)` in its metadata), shapes, time and GFLOP/s; then the time of the other
ops grouped by kind. Compare the GFLOP/s with `memory_benchmark.py`'s measured matmul peak
(per core: divide by the core count). Like the benchmark's workers, it runs with huge pages
for malloc (`titans_jax.host_malloc`, one re-exec; TITANS_HUGE_PAGES=0: off): without them
page faults in the step's fresh buffers take ~1/3 of a 2K step on 2 devices, which the
benchmark never sees.
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from memory_benchmark import (BATCH, CHUNK, EXPANSION, HEAD_DIM, HEADS,  # noqa: E402
                              allocator_setting, build_jax_step, memory_layer_flops_per_token,
                              memory_op_flops_per_token)

ASYNC_GFLOPS = 500.0  # above any core's float32 peak: the event cannot be the whole matmul
# Control flow holds other ops: a loop's event spans its body's ops (when the thread runs
# the body inline) or only its dispatch, so counting it would count its ops twice.
CONTAINERS = ("while", "conditional", "call")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")


def parse_hlo(text: str):
  """{instruction: (computation, body)} and {computation: [bodies]} of an HLO module's text."""
  instructions, computations, current = {}, {}, None
  for line in text.splitlines():
    if not line.startswith(" "):
      match = _COMPUTATION.match(line)
      if match:
        current = match.group(1)
        computations[current] = []
      continue
    match = _INSTRUCTION.match(line)
    if match and current is not None:
      instructions[match.group(1)] = (current, match.group(2))
      computations[current].append(match.group(2))
  return instructions, computations


def _dims(body: str) -> list[int]:
  match = re.match(r"\w+\[([\d,]*)\]", body)
  return [int(d) for d in match.group(1).split(",") if d] if match else []


def dot_flops(body: str, instructions) -> tuple[int, str]:
  """FLOPs (2 per multiply-add) and 'lhs x rhs -> out' of one HLO dot."""
  out = _dims(body)
  operands = re.search(r"dot\(%([\w.\-]+), %([\w.\-]+)\)", body)
  lhs, rhs = ([_dims(instructions[name][1]) for name in operands.groups()]
              if operands else ([], []))
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", body)
  size = math.prod(lhs[int(d)] for d in contracting.group(1).split(",") if d) if (
      contracting and lhs) else 0
  return 2 * math.prod(out) * size, f"{lhs} x {rhs} -> {out}"


def matmuls_of(body: str, instructions, computations) -> tuple[int, str] | None:
  """(FLOPs, shapes) of an instruction that is a dot or a fusion holding dots; else None."""
  if " dot(" in body:
    return dot_flops(body, instructions)
  called = re.search(r"calls=%([\w.\-]+)", body)
  if " fusion(" not in body or not called:
    return None
  inner = [dot_flops(b, instructions) for b in computations.get(called.group(1), [])
           if " dot(" in b]
  if not inner:
    return None
  return sum(f for f, _ in inner), " + ".join(s for _, s in inner)


def profile(length: int, mode: str, devices: int, steps: int, layer: bool = False) -> str:
  import jax

  step, args = build_jax_step(length, mode, op_only=not layer, devices=devices)
  instructions, computations = parse_hlo(step.lower(*args).compile().as_text())
  jax.block_until_ready(step(*args))  # compiled and warm before the trace
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder):
      start = time.perf_counter()
      for _ in range(steps):
        jax.block_until_ready(step(*args))
      wall_ms = (time.perf_counter() - start) / steps * 1e3
    (trace,) = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(trace)
    time_ns, calls = collections.Counter(), collections.Counter()
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          if event.name in instructions:
            time_ns[event.name] += event.duration_ns
            calls[event.name] += 1
  per_step = steps * devices  # every device runs every instruction once per call

  what = "memory layer (projections + op)" if layer else "memory op"
  lines = [f"{what} forward + backward, {length} tokens x batch {BATCH}, {HEADS} heads x "
           f"{HEAD_DIM}, depth-2 (hidden {EXPANSION * HEAD_DIM}), chunk {CHUNK}, {mode} "
           f"retrieval, {devices} device(s); malloc: {allocator_setting(os.environ)}; "
           "per device and step:", "",
           "| op | phase | calls | ms | GFLOP/s | lhs x rhs -> out |", "|---|---|---|---|---|---|"]
  phases = collections.defaultdict(lambda: [0.0, 0.0])
  others = collections.Counter()
  rows = []
  for name, ns in time_ns.items():
    body = instructions[name][1]
    ms = ns / per_step / 1e6
    if re.sub(r"\.\d+$", "", name) in CONTAINERS:
      continue
    found = matmuls_of(body, instructions, computations)
    if found is None:
      others[re.sub(r"\.\d+$", "", name)] += ms
      continue
    flops = found[0] * calls[name] / per_step
    phase = "backward" if "transpose(" in body else "forward"
    phases[phase][0] += ms
    phases[phase][1] += flops
    rows.append((ms, name, phase, calls[name] // per_step, flops / ms / 1e6, found[1]))
  for ms, name, phase, count, gflops, shapes in sorted(rows, reverse=True):
    # A large Eigen dot outside the loops runs on the intra-op thread pool: its event is the
    # dispatch only, and its time shows up as a gap in the trace (no one core runs 500 GFLOP/s).
    note = " (async: event is the dispatch only)" if gflops > ASYNC_GFLOPS else ""
    lines.append(f"| {name} | {phase} | {count} | {ms:.1f} | {gflops:.0f}{note} | {shapes} |")
  lines.append("")
  for phase, (ms, flops) in sorted(phases.items()):
    lines.append(f"matmuls, {phase}: {ms:.1f} ms, {flops / 1e9:.2f} GFLOP, "
                 f"{flops / ms / 1e6:.0f} GFLOP/s")
  per_token = (memory_layer_flops_per_token if layer else memory_op_flops_per_token)(retrieval=mode)
  analytic = per_token * BATCH * length / devices
  lines.append(f"analytic forward FLOPs of the {'layer' if layer else 'op'} (memory_benchmark.py): "
               f"{analytic / 1e9:.2f} GFLOP")
  lines.append(f"other ops: {sum(others.values()):.1f} ms; the largest kinds:")
  lines += [f"  {ms:6.1f} ms  {kind}" for kind, ms in others.most_common(12)]
  total = sum(ms for ms, *_ in rows) + sum(others.values())
  ops_count = sum(calls.values()) // per_step
  lines.append(f"all ops: {total:.1f} ms per device and step ({ops_count} op calls) in a "
               f"{wall_ms:.1f} ms step: {total * devices / wall_ms:.2f} threads busy on average")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--length", type=int, default=2048)
  parser.add_argument("--mode", choices=("token", "chunk"), default="token")
  parser.add_argument("--devices", type=int, default=1, help="CPU devices, batch rows split")
  parser.add_argument("--steps", type=int, default=3, help="steps traced")
  parser.add_argument("--layer", action="store_true",
                      help="the benchmark's whole memory layer (projections + op), not the op alone")
  args = parser.parse_args()
  if args.length < 1 or args.steps < 1 or args.devices < 1:
    parser.error("--length, --steps and --devices must be >= 1")
  if BATCH % args.devices:
    parser.error(f"--devices={args.devices} must divide the batch ({BATCH})")
  from titans_jax import host_malloc

  host_malloc.reexec_with_huge_pages()  # the benchmark workers' allocator (glibc: at start only)
  print(profile(args.length, args.mode, args.devices, args.steps, args.layer))


if __name__ == "__main__":
  main()
