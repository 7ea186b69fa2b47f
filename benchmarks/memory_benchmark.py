"""Memory-layer benchmark: titans_jax's memory op against titans-pytorch, side by side.

  python benchmarks/memory_benchmark.py                 # 2K / 8K / 32K, both retrievals, peers
  python benchmarks/memory_benchmark.py --quick         # a one-minute look (256 / 512 tokens)

A *memory layer* is what a Titans block runs around the op: q / k / v / gate
projections of x [B, T, 256], 4 heads of a depth-2 memory (hidden 4 x 64), chunk 64,
and an output projection. Each measurement (implementation x retrieval x length)
runs in its own subprocess, so its peak resident memory is its own; forward +
backward of a scalar loss are timed after a warm-up (compile) step, median of
`--steps`. The peer is the PyPI package `titans-pytorch`: its default NeuralMemory
(coarse chunk-level gates, all gradients at the initial weights) and the
configuration whose math equals ours (`chunk_size=1, batch_size=64`).

Our layer runs twice per cell: on one XLA CPU device, and (`--jax_devices`, default 1 and
the core count) on one CPU device per core with the batch rows split over them (the same
jitted step, partitioned by GSPMD, as `JAX_NUM_CPU_DEVICES=N` gives the training system).
One XLA CPU device runs each small batched matmul of the chunk step on one thread, so it
keeps ~1.5 of 2 cores busy; the peer's torch uses both cores in every op. `--rounds=R`
measures every row R times, ours and the peer's alternating, and keeps the median (on a
shared machine the peer's own speed moves ~20% between runs).

FLOPs are counted analytically from the chunk algorithm of `titans_jax/ops/memory.py`
(see `memory_layer_flops_per_token`); training FLOPs = 3 x forward (the usual
forward + backward convention; rematerialisation's recompute is not counted as
useful work). The fraction is taken of this machine's float32 matmul peak,
measured in the same run by a large jitted matmul (the highest of one per round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import run_worker  # noqa: E402  (the benchmarks' shared subprocess runner)

D_MODEL, HEADS, HEAD_DIM, EXPANSION, CHUNK, BATCH = 256, 4, 64, 4, 64, 4
TARGETS = "token >= 2x peer at 2K and >= 5x at 8K; 32K within 20% of 2K; 32K RSS < 4 GB; >= 30% of peak"


# ----------------------------------------------------------------------------- FLOPs


def memory_layer_flops_per_token(*, retrieval: str, d_model=D_MODEL, heads=HEADS,
                                 head_dim=HEAD_DIM, hidden=EXPANSION * HEAD_DIM,
                                 chunk=CHUNK) -> float:
  """Forward FLOPs per token of the memory layer (2 per multiply-add)."""
  projections = 2 * d_model * (3 * heads * head_dim + 3 * heads) + 2 * heads * head_dim * d_model
  return projections + memory_op_flops_per_token(retrieval=retrieval, heads=heads,
                                                 head_dim=head_dim, hidden=hidden, chunk=chunk)


def memory_op_flops_per_token(*, retrieval: str, heads=HEADS, head_dim=HEAD_DIM,
                              hidden=EXPANSION * HEAD_DIM, chunk=CHUNK) -> float:
  """Forward FLOPs per token of the memory op alone (all heads)."""
  dims = [head_dim, hidden, head_dim]
  memory = 2 * chunk * chunk + 2 * chunk  # C = (A m) E and D, per token
  for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
    params = fan_in * fan_out
    memory += 2 * params                 # keys forward at W_grad
    if layer > 0:
      memory += 2 * params               # backprop signal delta to the layer below
    memory += 4 * params                 # chunk-end W and S: two (d x b)(b x d') per chunk
    if retrieval == "token":
      memory += 4 * params               # x W_run and x S_run
      memory += 2 * chunk * (fan_in + fan_out)  # (x h^T) masked by C, then times delta
    else:
      memory += 2 * params               # plain forward at the chunk-start weights
  return heads * memory


# ----------------------------------------------------------------------------- workers


def _time_steps(run_step, steps: int) -> tuple[float, float]:
  start = time.perf_counter()
  run_step()  # warm-up: compile / allocate
  warmup = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run_step()
    times.append(time.perf_counter() - start)
  return statistics.median(times), warmup


def worker_jax(length: int, retrieval: str, steps: int, op_only: bool = False,
               devices: int = 1) -> dict:
  import jax

  step, args = build_jax_step(length, retrieval, op_only, devices)
  seconds, warmup = _time_steps(lambda: jax.block_until_ready(step(*args)), steps)
  return _checked({"seconds": seconds, "warmup_seconds": warmup}, step(*args))


def usable_device_count(requested: int) -> int:
  """The most CPU devices, up to `requested`, that split the batch rows evenly (an 8-core
  machine runs the batch of 4 on 4 devices rather than not at all)."""
  if requested < 1:
    raise ValueError(f"--jax_devices holds {requested}; expected device counts >= 1")
  usable = max(n for n in range(1, min(requested, BATCH) + 1) if BATCH % n == 0)
  if usable != requested:
    print(f"--jax_devices: {requested} devices do not split the batch of {BATCH}; using {usable}")
  return usable


def build_jax_step(length: int, retrieval: str, op_only: bool = False, devices: int = 1):
  """The measured step (jitted forward + backward) and its arguments: the memory layer, or
  with op_only the memory op alone. Also what `op_profile.py` traces."""
  import jax

  if devices > 1:  # before the backend starts: this many CPU devices, one per core
    jax.config.update("jax_num_cpu_devices", devices)
  import jax.numpy as jnp

  from titans_jax.ops import MemoryConfig, init_memory_state, init_memory_weights, memory_apply
  from titans_jax.ops.dense import dense  # as the models' projections (layers.dense)

  config = MemoryConfig(depth=2, expansion=EXPANSION, chunk_size=CHUNK, retrieval=retrieval)
  keys = jax.random.split(jax.random.key(0), 8)
  inner = HEADS * HEAD_DIM
  scale = D_MODEL ** -0.5
  params = {
      "qkv": scale * jax.random.normal(keys[0], (D_MODEL, 3 * inner)),
      "gates": scale * jax.random.normal(keys[1], (D_MODEL, 3 * HEADS)),
      # The models' initial gates (ModelConfig.*_bias_init): theta ~ 0.12, eta ~ 0.5, alpha ~ 0.02.
      "gate_bias": jnp.tile(jnp.array([-2.0, 0.0, -4.0]), HEADS),
      "out": inner ** -0.5 * jax.random.normal(keys[2], (inner, D_MODEL)),
      "w0": init_memory_weights(keys[3], num_heads=HEADS, d_in=HEAD_DIM, d_out=HEAD_DIM,
                                config=config),
  }
  x = jax.random.normal(keys[4], (BATCH, length, D_MODEL))
  if devices > 1:
    # Data parallel: the batch rows split over the devices, the parameters replicated; the
    # same jitted step, partitioned by GSPMD (one all-reduce of the gradients per step).
    # The CPU devices by name: on a machine with an accelerator the default backend is that
    # (the one-device row runs there), while these rows stay what they say.
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    cpus = jax.devices("cpu")
    if len(cpus) != devices or BATCH % devices:
      raise ValueError(f"--devices={devices}: needs {devices} CPU devices and a batch "
                       f"({BATCH}) divisible by them; got {len(cpus)} CPU devices")
    mesh = Mesh(cpus, ("data",))
    x = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))

  def heads_first(t):  # [B, T, H*d] -> [B, H, T, d]
    return t.reshape(BATCH, length, HEADS, -1).transpose(0, 2, 1, 3)

  def memory_gates(gates):
    """(theta, eta, alpha) [B, H, T] as the models make them (MemoryBlock.memory_inputs):
    theta scaled by 1 / chunk and by (1 - eta), so the memory stays finite at any length."""
    theta, eta, alpha = gates.reshape(BATCH, length, HEADS, 3).transpose(3, 0, 2, 1)
    return theta * (1.0 - eta) / CHUNK, eta, alpha

  if op_only:  # the memory op alone: fixed q / k / v / gates, gradients into all of them
    q, k, v = jnp.split(jax.nn.silu(dense(x, params["qkv"])), 3, axis=-1)
    gates = jax.nn.sigmoid(dense(x, params["gates"], params["gate_bias"]))
    inputs = (heads_first(q), heads_first(k), heads_first(v), jnp.stack(memory_gates(gates)))

    def op_loss(w0, q, k, v, gates):
      q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
      k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
      y, _ = memory_apply(config, init_memory_state(w0, BATCH), q, k, v, *gates)
      return jnp.mean(y ** 2)

    return jax.jit(jax.value_and_grad(op_loss, argnums=(0, 1, 2, 3, 4))), (params["w0"], *inputs)

  def loss(params, x):
    q, k, v = jnp.split(jax.nn.silu(dense(x, params["qkv"])), 3, axis=-1)
    q, k, v = heads_first(q), heads_first(k), heads_first(v)
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    gates = jax.nn.sigmoid(dense(x, params["gates"], params["gate_bias"]))
    theta, eta, alpha = memory_gates(gates)
    state = init_memory_state(params["w0"], BATCH)
    y, _ = memory_apply(config, state, q, k, v, theta, eta, alpha)
    out = dense(y.transpose(0, 2, 1, 3).reshape(BATCH, length, -1), params["out"])
    return jnp.mean(out ** 2)

  return jax.jit(jax.value_and_grad(loss)), (params, x)


def _checked(result: dict, value_and_grads) -> dict:
  """The timed step's loss and gradients must be finite: a diverged memory (inf / NaN)
  is not a measurement of the layer."""
  import jax
  import numpy as np

  if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(value_and_grads)):
    raise FloatingPointError("the timed step's loss or gradients are not finite")
  return result


def worker_torch(length: int, variant: str, steps: int) -> dict:
  import torch
  from titans_pytorch import NeuralMemory

  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  kwargs = dict(dim=D_MODEL, heads=HEADS, dim_head=HEAD_DIM,
                default_model_kwargs=dict(depth=2, expansion_factor=float(EXPANSION)))
  if variant == "default":
    memory = NeuralMemory(chunk_size=CHUNK, **kwargs)
  else:  # gradients at the chunk-start weights, state per token: our math with chunk 64
    memory = NeuralMemory(chunk_size=1, batch_size=CHUNK, **kwargs)
  x = torch.randn(BATCH, length, D_MODEL)

  def run_step():
    memory.zero_grad(set_to_none=True)
    retrieved, _ = memory(x)
    loss = retrieved.pow(2).mean()
    loss.backward()
    return loss

  seconds, warmup = _time_steps(run_step, steps)
  loss = run_step()
  if not (torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in memory.parameters()
                                       if p.grad is not None)):
    raise FloatingPointError("the timed step's loss or gradients are not finite")
  return {"seconds": seconds, "warmup_seconds": warmup}


def worker_matmul_peak() -> dict:
  import jax
  import jax.numpy as jnp

  best = 0.0
  for size in (1024, 2048, 3072):
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    seconds, _ = _time_steps(lambda: matmul(a).block_until_ready(), 5)
    best = max(best, 2 * size ** 3 / seconds)
  return {"flops_per_second": best}


def worker_main(args) -> None:
  if args.worker == "jax":
    result = worker_jax(args.length, args.mode, args.steps, args.op_only, args.devices)
  elif args.worker == "torch":
    result = worker_torch(args.length, args.mode, args.steps)
  else:
    result = worker_matmul_peak()
  print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- parent


def run_measurement(worker: str, *, length=0, mode="", steps=3, timeout=900,
                    memory_cap_gb=20.0, devices=1) -> dict:
  """Runs one worker subprocess; returns its result with peak RSS, or an error."""
  return run_worker([os.path.abspath(__file__), f"--worker={worker}", f"--length={length}",
                     f"--mode={mode}", f"--steps={steps}", f"--devices={devices}"],
                    timeout=timeout, memory_cap_gb=memory_cap_gb)


def peer_available() -> bool:
  try:
    import titans_pytorch  # noqa: F401
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lengths", default="2048,8192,32768")
  parser.add_argument("--modes", default="token,chunk")
  parser.add_argument("--peers", default="default,exact", help="titans-pytorch variants, or 'none'")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=1,
                      help="measure every row this many times, ours and the peer's alternating; "
                      "each row reports the median (the peer's speed moves ~20%% between runs)")
  parser.add_argument("--quick", action="store_true", help="256 / 512 tokens, one step")
  parser.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
  parser.add_argument("--memory_cap_gb", type=float, default=16.0,
                      help="a measurement above this resident size is stopped and reported OOM")
  parser.add_argument("--jax_devices", default=f"1,{os.cpu_count() or 1}",
                      help="CPU device counts our layer runs on: 1 (one XLA device; its small "
                      "batched matmuls run one per thread, ~1.5 of 2 cores busy) and N (one "
                      "device per core, the batch split over them; a count that does not split the batch of "
                      f"{BATCH} runs as the most that do)")
  parser.add_argument("--out", default="bench_results")
  parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--length", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--mode", default="", help=argparse.SUPPRESS)
  parser.add_argument("--op_only", action="store_true", help="with --worker=jax: time the "
                      "memory op alone (no projections), for profiling the op itself")
  args = parser.parse_args()
  if args.worker:
    return worker_main(args)
  if args.quick:
    args.lengths, args.steps = "256,512", 1
  lengths = [int(x) for x in args.lengths.split(",")]
  device_counts = sorted({usable_device_count(int(n)) for n in args.jax_devices.split(",") if n})
  modes = [m for m in args.modes.split(",") if m]
  peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
  if peers and not peer_available():
    print("titans-pytorch / torch not installed (pip install -e '.[bench]'): peers skipped")
    peers = []

  # The peak is measured once per round and the highest kept: a slow spell of the machine
  # must not lower it (that would raise our fraction of it).
  peaks = [run_measurement("matmul").get("flops_per_second", float("nan"))
           for _ in range(args.rounds)]
  peak_flops = max(peaks)
  print(f"float32 matmul peak of this machine ({machine_description()}): "
        f"{peak_flops / 1e9:.1f} GFLOP/s")
  rows = []
  for length in lengths:
    # Rounds alternate ours and the peer's measurements: a slower spell of a shared machine
    # falls on both, and each row keeps the median over the rounds.
    measured = []
    for round_index in range(args.rounds):
      for mode in modes:
        for devices in device_counts:
          measured.append({"impl": "titans_jax", "variant": mode, "devices": devices,
                           "length": length, "round": round_index,
                           **run_measurement("jax", length=length, mode=mode, steps=args.steps,
                                             timeout=args.timeout, devices=devices,
                                             memory_cap_gb=args.memory_cap_gb)})
          print(_row_text(measured[-1]), flush=True)
      for variant in peers:
        if any(r["error"] for r in measured if r["impl"] == "titans-pytorch"
               and r["variant"] == variant):
          continue  # out of memory (or failed) once: not measured again
        measured.append({"impl": "titans-pytorch", "variant": variant, "devices": 1,
                         "length": length, "round": round_index,
                         **run_measurement("torch", length=length, mode=variant,
                                           steps=args.steps, timeout=args.timeout,
                                           memory_cap_gb=args.memory_cap_gb)})
        print(_row_text(measured[-1]), flush=True)
    rows.extend(_median_over_rounds(measured))
  for row in rows:
    _derive(row, rows, peak_flops)
  table = _markdown(rows, peak_flops)
  checks = _targets(rows, lengths, device_counts)
  print("\n" + table + "\n")
  for line in checks:
    print(line)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "memory_benchmark.json"), "w") as handle:
    json.dump({"machine": machine_description(), "matmul_peak_flops": peak_flops, "rows": rows,
               "targets": checks}, handle, indent=2)
  with open(os.path.join(args.out, "memory_benchmark.md"), "w") as handle:
    handle.write(table + "\n\n" + "\n".join(checks) + "\n")
  print(f"\nwritten: {os.path.join(args.out, 'memory_benchmark.md')} and .json")


def _median_over_rounds(measured) -> list[dict]:
  """One row per (impl, variant, devices, length): median seconds over its rounds, the
  largest peak RSS, and every round's seconds; an error in any round is the row's error."""
  groups = {}
  for row in measured:
    groups.setdefault((row["impl"], row["variant"], row["devices"], row["length"]), []).append(row)
  rows = []
  for group in groups.values():
    failed = [r for r in group if r["error"]]
    row = dict(failed[0] if failed else group[0])
    row.pop("round", None)
    row["peak_rss_gb"] = max(r["peak_rss_gb"] for r in group)
    if not failed:
      row["round_seconds"] = [r["seconds"] for r in group]
      row["seconds"] = statistics.median(row["round_seconds"])
    rows.append(row)
  return rows


def _variant(row) -> str:
  """token / chunk on one device; 'token, 2 dev' on several CPU devices (batch split)."""
  devices = row.get("devices", 1)
  return row["variant"] if devices == 1 else f"{row['variant']}, {devices} dev"


def _row_text(row) -> str:
  what = f"{row['impl']:>14} {_variant(row):>12} T={row['length']:>6}"
  if row["error"]:
    return f"{what}: {row['error']}"
  return (f"{what}: {BATCH * row['length'] / row['seconds']:9.0f} tokens/s, "
          f"peak RSS {row['peak_rss_gb']:.2f} GB")


def _derive(row, rows, peak_flops) -> None:
  if row["error"]:
    return
  row["tokens_per_second"] = BATCH * row["length"] / row["seconds"]
  if row["impl"] == "titans_jax":
    flops = 3 * memory_layer_flops_per_token(retrieval=row["variant"])
    row["flops_per_token"] = flops
    row["gflops_per_second"] = flops * row["tokens_per_second"] / 1e9
    row["fraction_of_peak"] = flops * row["tokens_per_second"] / peak_flops
  peer = next((r for r in rows if r["impl"] == "titans-pytorch" and r["variant"] == "default"
               and r["length"] == row["length"] and not r["error"]), None)
  if peer is not None:
    row["speedup_vs_peer_default"] = row["tokens_per_second"] / (
        BATCH * peer["length"] / peer["seconds"])


def machine_description() -> str:
  """'N cores, <model>, <widest float SIMD>': the peak, and so every ratio, moves with the SIMD
  width the machine exposes (the same EPYC measured 363 GFLOP/s with AVX-512, 166 without)."""
  model, flags = "unknown CPU", set()
  try:
    with open("/proc/cpuinfo") as handle:
      for line in handle:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
          model = value.strip()
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  simd = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                                       ("asimd", "NEON")) if flag in flags), "SIMD unknown")
  return f"{os.cpu_count()} cores, {model}, {simd}"


def allocator_setting(env=None) -> str:
  """The allocator setting of env; default: the one run_worker gives every worker
  (titans_jax.host_malloc)."""
  from titans_jax import host_malloc

  tunables = (host_malloc.environment() if env is None else env).get("GLIBC_TUNABLES", "")
  return f"GLIBC_TUNABLES={tunables}" if tunables else "the C library's default"


def _markdown(rows, peak_flops) -> str:
  lines = [f"machine: {machine_description()}; float32 matmul peak measured: "
           f"{peak_flops / 1e9:.1f} GFLOP/s; batch {BATCH}, "
           f"dim {D_MODEL}, {HEADS} heads x {HEAD_DIM}, depth-2 memory (hidden "
           f"{EXPANSION * HEAD_DIM}), chunk {CHUNK}, float32, forward + backward; "
           "'N dev': the same step on N CPU devices, batch rows split over them; every worker's "
           f"malloc: {allocator_setting()}",
           "",
           "| impl | variant | tokens | tokens/s | peak RSS GB | MFLOP/token | GFLOP/s | % of peak "
           "| x peer default |",
           "|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    if row["error"]:
      lines.append(f"| {row['impl']} | {_variant(row)} | {row['length']} | {row['error']} | "
                   f"{row['peak_rss_gb']:.2f} | | | | |")
      continue
    # Training FLOPs per token (3 x the analytic forward count), the numerator of "% of peak".
    per_token = f"{row['flops_per_token'] / 1e6:.2f}" if "flops_per_token" in row else ""
    gflops = f"{row['gflops_per_second']:.1f}" if "gflops_per_second" in row else ""
    fraction = f"{100 * row['fraction_of_peak']:.0f}%" if "fraction_of_peak" in row else ""
    speedup = f"{row['speedup_vs_peer_default']:.2f}" if "speedup_vs_peer_default" in row else ""
    lines.append(f"| {row['impl']} | {_variant(row)} | {row['length']} | "
                 f"{row['tokens_per_second']:.0f} | {row['peak_rss_gb']:.2f} | {per_token} | "
                 f"{gflops} | {fraction} | {speedup} |")
  return "\n".join(lines)


def _targets(rows, lengths, device_counts=(1,)) -> list[str]:
  """The issue's targets, checked for our token retrieval on each device count."""
  checks = [f"targets: {TARGETS}"]
  for devices in device_counts:
    where = "one device" if devices == 1 else f"{devices} CPU devices"
    ours = {r["length"]: r for r in rows if r["impl"] == "titans_jax" and r["variant"] == "token"
            and r.get("devices", 1) == devices and not r["error"]}

    def check(name, value, ok):
      checks.append(f"{'PASS' if ok else 'FAIL'}: [{where}] {name} ({value})")

    for length, factor in ((2048, 2.0), (8192, 5.0)):
      if length in ours and "speedup_vs_peer_default" in ours[length]:
        speedup = ours[length]["speedup_vs_peer_default"]
        check(f"token retrieval at {length} >= {factor}x titans-pytorch default",
              f"{speedup:.2f}x", speedup >= factor)
    if 2048 in ours and 32768 in ours:
      ratio = ours[32768]["tokens_per_second"] / ours[2048]["tokens_per_second"]
      check("tokens/s at 32K within 20% of 2K", f"{ratio:.2f} of 2K", ratio >= 0.8)
    if 32768 in ours:
      check("peak resident memory at 32K < 4 GB", f"{ours[32768]['peak_rss_gb']:.2f} GB",
            ours[32768]["peak_rss_gb"] < 4.0)
    if ours:
      best = max(r["fraction_of_peak"] for r in ours.values())
      check(">= 30% of the measured float32 matmul peak", f"best {100 * best:.1f}%", best >= 0.3)
  return checks


if __name__ == "__main__":
  main()
