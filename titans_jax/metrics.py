"""Training metrics: console progress, TensorBoard event files and metrics.jsonl.

Only the primary process writes. Metrics of step N are fetched after step N + 1
has been dispatched (see train.py), so logging never stalls the device.
"""

from __future__ import annotations

import json
import os
import sys
import time

# Peak dense bf16 FLOP/s per device, for the MFU estimate (vendors' figures).
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def peak_flops_per_device(device_kind: str) -> float | None:
  for name, flops in PEAK_FLOPS.items():
    if device_kind.startswith(name) or name in device_kind:
      return flops
  return None


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as handle:
    return [json.loads(line) for line in handle if line.strip()]


class MetricsWriter:
  """Writes scalars to metrics.jsonl and TensorBoard; prints progress lines."""

  def __init__(self, workdir: str, *, enabled: bool, total_steps: int, resume_step: int = 0):
    self.enabled = enabled
    self.total_steps = total_steps
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.tensorboard = None
    self.start_time = time.time()
    self.start_step = resume_step
    if not enabled:
      return
    # After a resume, drop lines of steps that will be run again (a killed run's tail).
    kept = [row for row in read_jsonl(self.jsonl_path) if row.get("step", 0) <= resume_step]
    with open(self.jsonl_path, "w") as handle:
      handle.writelines(json.dumps(row) + "\n" for row in kept)
    from tensorboardX import SummaryWriter  # imported here: only the primary process writes

    self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.jsonl_path, "a") as handle:
      handle.write(json.dumps(row) + "\n")
    for name, value in scalars.items():
      self.tensorboard.add_scalar(name, float(value), int(step))

  def progress(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    elapsed = time.time() - self.start_time
    done = max(step - self.start_step, 1)
    left = (self.total_steps - step) * elapsed / done
    width = 24
    filled = int(width * step / max(self.total_steps, 1))
    bar = "#" * filled + "." * (width - filled)
    parts = [f"[{bar}] step {step}/{self.total_steps}"]
    for name in ("loss", "eval_loss", "accuracy", "tokens_per_sec", "mfu"):
      if name in scalars:
        value = scalars[name]
        parts.append(f"{name} {value:.4g}" if name != "mfu" else f"mfu {100 * value:.1f}%")
    parts.append(f"left {_duration(left)}")
    print("  ".join(parts), file=sys.stdout, flush=True)

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s"
