"""Seeing the memory work: per-token gates, surprise, reconstruction loss and retention.

For every memory layer (variants lmm, mac, mag, mal) and head, over one sequence:

  theta, eta, alpha   the gates of Eqs. 10 and 13, as the gate layers compute them
  surprise            ||grad_W l(W; k_t, v_t)|| at the weights of the start of t's chunk
  loss_before/_after  l(W; k_t, v_t) = ||M(k_t) - v_t||^2 before / after token t's write
  retention           prod_{m=s+1..t} (1 - alpha_m): what forgetting leaves of W_s in W_t
  write_weight        how much of token s's gradient W_t holds (momentum and forgetting)

    python -m titans_jax.evaluation.traces --workdir=/tmp/titans_quickstart \\
        --niah_length=1024 --depth=0.5 --out=/tmp/traces.png

How the memory's inputs are seen: `record_memory_writes` wraps `MemoryBlock.__call__`
for the duration of a `with` block and keeps each call's input x and cache; the gates
and q/k/v are then recomputed with the block's own `memory_inputs`, so they are the
model's, whatever ran before the block (earlier layers, MAC's attention). The model's
code stays untouched and its outputs unchanged. The forward pass runs eagerly (as
`model(tokens)` does; the memory op inside is jitted), so records are concrete arrays;
a record made inside a `lax.scan` body would be a tracer, so inside the `with` MAC runs
its whole segments as a Python loop instead of a scan (same pieces, same results).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from titans_jax.models.memory_block import MemoryBlock
from titans_jax.models.titans import MACMixer
from titans_jax.ops import memory_diagnostics as diagnostics

GATES = ("theta", "eta", "alpha")
LOSSES = ("surprise", "loss_chunk_start", "loss_before", "loss_after")
PER_TOKEN = GATES + LOSSES + ("retention", "write_weight")  # each [layers, heads, T]


class MemoryWrite(NamedTuple):
  """One call of a memory block: the block, its input x [B, T, width] and its cache."""

  block: MemoryBlock
  x: jax.Array
  cache: dict


@contextlib.contextmanager
def record_memory_writes():
  """Yields a list that every MemoryBlock call made inside the `with` appends to.

  Run the model eagerly inside the `with`, so records are concrete arrays. The classes
  are patched for the duration (not thread-safe: trace one model at a time).
  """
  records: list[MemoryWrite] = []
  original_call, original_segments = MemoryBlock.__call__, MACMixer._segments

  def recording_call(self, x, cache, documents=None, **kwargs):
    if isinstance(x, jax.core.Tracer):
      raise ValueError("a memory block ran under a JAX transformation (jit, scan, vmap) while "
                       "recording; run the model eagerly (model(tokens) or model.stream) to trace it")
    if documents is not None:
      raise ValueError("traces follow one stream; trace packed documents one at a time")
    records.append(MemoryWrite(self, x, cache))
    return original_call(self, x, cache, **kwargs)

  def eager_segments(self, x, cache, count, documents=None, reset_cache=None):
    # Same pieces as MACMixer._segments, one after the other, with static positions.
    if documents is not None:
      raise ValueError("traces follow one stream; trace packed documents one at a time")
    segment, outputs = self.config.segment_len, []
    for index in range(count):
      out, cache = self._piece(x[:, index * segment:(index + 1) * segment], cache, 0)
      outputs.append(out)
    return jnp.concatenate(outputs, axis=1), cache

  MemoryBlock.__call__, MACMixer._segments = recording_call, eager_segments
  try:
    yield records
  finally:
    MemoryBlock.__call__, MACMixer._segments = original_call, original_segments


def memory_blocks(model) -> list[tuple[int, MemoryBlock]]:
  """(layer index, memory block) of every layer of a zoo LM that has one."""
  found = []
  for index, layer in enumerate(model.layers):
    blocks = [node for _, node in nnx.iter_graph(layer) if isinstance(node, MemoryBlock)]
    found.extend((index, block) for block in blocks)
  return found


def _as_batch(model, tokens):
  """One sequence as a batch of one: ids [T] / [1, T], or floats [T, D] / [1, T, D]."""
  tokens = jnp.asarray(tokens)
  single = 2 if model.config.input_dim else 1
  if tokens.ndim == single:
    tokens = tokens[None]
  if tokens.ndim != single + 1 or tokens.shape[0] != 1:
    raise ValueError(f"tokens have shape {tuple(tokens.shape)}; expected one sequence: "
                     + ("[T, input_dim] or [1, T, input_dim]" if single == 2 else "[T] or [1, T]"))
  return tokens


def _select(model, layer) -> list[tuple[int, MemoryBlock]]:
  blocks = memory_blocks(model)
  if not blocks:
    raise ValueError(f"model variant {model.config.variant!r} has no neural memory to trace "
                     f"(memory_enabled={model.config.memory_enabled}); expected one of lmm, mac, "
                     "mag, mal with memory on")
  if layer is None:
    return blocks
  wanted = [int(layer)] if np.ndim(layer) == 0 else [int(i) for i in layer]
  have = sorted({index for index, _ in blocks})
  missing = [i for i in wanted if i not in have]
  if missing:
    raise ValueError(f"layer={layer!r}: layers {missing} hold no memory; expected indices among {have}")
  return [(index, block) for index, block in blocks if index in wanted]


def _trace_block(block: MemoryBlock, calls: list[MemoryWrite]) -> tuple[dict, int]:
  """Joins the block's calls (consecutive pieces of one stream) and diagnoses them.

  Returns host arrays of the one batch row, [H, T] (memory_input [T, width]; the
  gates as the update applied them under applied_*), and the stream position of token 0.
  """
  pieces, position = [], None
  for call in calls:
    state = call.cache["memory"]
    if position is not None and int(state.position) != position:
      raise ValueError(f"memory block calls are not one stream (position {int(state.position)} "
                       f"after {position}); trace a single forward pass")
    pieces.append(block.memory_inputs(call.x, call.cache.get("conv"))[:6])
    position = int(state.position) + call.x.shape[1]
  join = lambda parts, axis: parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)
  q, k, v, theta, eta, alpha = (join(parts, 2) for parts in zip(*pieces))  # [B, H, T, ...]
  start = calls[0].cache["memory"]
  _, _, report = diagnostics.memory_diagnostics(block.config.memory_config(), start, q, k, v,
                                                theta, eta, alpha)
  # Batch row 0 on the host: slicing device arrays would compile one op per shape.
  row = lambda a: np.asarray(a, np.float32)[0]
  traced = {"memory_input": row(join([call.x for call in calls], 1)),
            "theta": row(theta), "eta": row(eta), "alpha": row(alpha)}
  traced.update({name: row(getattr(report, name)) for name in LOSSES})
  traced.update({f"applied_{name}": row(getattr(report, name)) for name in GATES})
  return traced, int(start.position)


def memory_traces(model, tokens, layer=None, *, retention_from: int = 0) -> dict:
  """Per-token traces of a zoo LM's memory over one sequence.

  Args:
    model: a TitansLM whose variant has memory (lmm, mac, mag, mal).
    tokens: one sequence, ids [T] or [1, T] (floats [T, input_dim] for continuous inputs).
    layer: None for every memory layer, or a model layer index (or a list of them).
    retention_from: the position s whose write `retention` and `write_weight` follow.
  Returns:
    numpy arrays: theta, eta, alpha, surprise, loss_chunk_start, loss_before,
    loss_after, retention, write_weight [layers, heads, T]; memory_input [layers, T,
    width] (what each memory block read); layer [layers] (model layer indices);
    start_position (the memory's stream position of token 0, after any persistent
    tokens), chunk_size, retention_from (scalars).
  """
  inputs = _as_batch(model, tokens)
  length = inputs.shape[1]
  if not 0 <= retention_from < length:
    raise ValueError(f"retention_from={retention_from} is outside the sequence; expected "
                     f"0 <= retention_from < {length}")
  selected = _select(model, layer)
  cache = model.init_cache(1)  # before recording: persistent tokens are not traced
  with record_memory_writes() as records:
    model.stream(inputs, cache)
  per_block, starts = zip(*(_trace_block(block, [r for r in records if r.block is block])
                            for _, block in selected))
  out = {name: np.stack([traced[name] for traced in per_block])
         for name in GATES + LOSSES + ("memory_input",)}
  # How the write of `retention_from` fades, under the gates the update used.
  applied = [[traced[f"applied_{name}"] for name in GATES] for traced in per_block]
  out["retention"] = np.stack([np.asarray(diagnostics.retention(gates[2], retention_from))
                               for gates in applied])
  out["write_weight"] = np.stack([np.asarray(diagnostics.write_weight(*gates, retention_from))
                                  for gates in applied])
  out["layer"] = np.array([index for index, _ in selected], np.int32)
  out["start_position"] = np.array(starts[0], np.int32)
  out["chunk_size"] = np.array(model.config.memory_chunk, np.int32)
  out["retention_from"] = np.array(retention_from, np.int32)
  return out


# ----------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------


def _token_text(tokens) -> list[str]:
  """Byte tokens as characters; non-printable ones as a middle dot."""
  return [chr(t) if 32 <= t < 127 else "·" for t in np.asarray(tokens).reshape(-1).tolist()]


def plot_traces(traces: dict, path: str, tokens=None, needle_span=None, title: str = "") -> str:
  """A PNG of the traces: gates, surprise (lines and a head-by-position map), the
  reconstruction loss before/after each write, and how the write of `retention_from`
  fades. Lines are head means per memory layer, bands the range over heads.

  tokens: the traced ids (byte text gets a character axis when short, the needle's text
  in the title); needle_span: (start, end) positions to shade, e.g. an S-NIAH needle.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  layers = [int(i) for i in traces["layer"]]
  num_layers, heads, length = traces["surprise"].shape
  positions = np.arange(length)
  source = int(traces["retention_from"])
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  color = lambda i: colors[i % len(colors)]
  panels = [("theta", r"$\theta_t$ (step)"), ("eta", r"$\eta_t$ (momentum)"),
            ("alpha", r"$\alpha_t$ (forgetting)"), ("surprise", r"surprise $\|\nabla \ell\|$"),
            ("heatmap", "log10 surprise"), ("loss", r"$\|M(k_t) - v_t\|^2$"),
            ("retention", f"retention of t={source}"), ("write_weight", f"write of t={source}")]
  figure, axes = plt.subplots(len(panels), 1, figsize=(12, 1.9 * len(panels)), sharex=True)

  def band(ax, values, index, label, style="-"):
    with np.errstate(over="ignore", invalid="ignore"):
      mean = values.astype(np.float64).mean(axis=0)
    ax.plot(positions, mean, style, color=color(index), lw=1.0, label=label)
    if heads > 1:
      ax.fill_between(positions, values.min(axis=0), values.max(axis=0), color=color(index), alpha=0.15,
                      lw=0)

  for ax, (name, label) in zip(axes, panels):
    ax.set_ylabel(label, fontsize=8)
    if name == "heatmap":
      with np.errstate(divide="ignore"):
        grid = np.log10(traces["surprise"].reshape(num_layers * heads, length).astype(np.float64))
      grid[~np.isfinite(grid)] = np.nan  # a diverged memory shows blank, not a saturated colour
      image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="magma",
                        extent=(-0.5, length - 0.5, grid.shape[0] - 0.5, -0.5))
      ax.set_yticks(range(grid.shape[0]), [f"L{layer} h{h}" for layer in layers for h in range(heads)],
                    fontsize=6)
      # An inset colour bar keeps this panel as wide as the others (shared positions).
      figure.colorbar(image, cax=ax.inset_axes([1.005, 0.0, 0.008, 1.0]))
    else:
      for index, layer in enumerate(layers):
        if name == "loss":
          band(ax, traces["loss_before"][index], index, f"layer {layer} before")
          band(ax, traces["loss_after"][index], index, f"layer {layer} after", style="--")
        elif name == "write_weight":
          # Relative to theta_s: 1 when written, > 1 while momentum keeps adding it.
          theta_source = traces["write_weight"][index][:, source:source + 1]
          band(ax, traces["write_weight"][index] / np.where(theta_source > 0, theta_source, 1.0),
               index, f"layer {layer}")
        else:
          band(ax, traces[name][index], index, f"layer {layer}")
      if name == "retention":
        ax.set_ylim(-0.02, 1.02)
      if name in ("surprise", "loss"):
        ax.set_yscale("log")  # spans orders of magnitude, more so when a memory diverges
    if needle_span is not None:
      ax.axvspan(needle_span[0] - 0.5, needle_span[1] - 0.5, color="tab:green", alpha=0.15, lw=0)
    if name in ("retention", "write_weight"):
      ax.axvline(source, color="grey", lw=0.8, ls=":")
  axes[0].legend(fontsize=7, loc="upper right", ncol=min(num_layers, 4))
  axes[5].legend(fontsize=7, loc="upper right", ncol=min(2 * num_layers, 4))
  chars = _token_text(tokens) if tokens is not None else None
  if chars is not None and len(chars) == length and length <= 128:
    axes[-1].set_xticks(positions, chars, fontsize=6)
  axes[-1].set_xlabel("position")
  heading = title or "neural memory traces"
  if needle_span is not None:
    heading += f"  (needle: positions {needle_span[0]}-{needle_span[1]}"
    if chars is not None:
      heading += ': "' + "".join(chars[needle_span[0]:needle_span[1]])[:80] + '"'
    heading += ")"
  axes[0].set_title(heading, fontsize=9)
  figure.subplots_adjust(left=0.08, right=0.97, bottom=0.04, top=0.97, hspace=0.12)  # tight_layout: slow
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


def summarize(traces: dict, needle_span=None) -> str:
  """Per layer: mean gates, median surprise and loss, each head's median surprise in the
  needle over elsewhere, the retention left at the end, and heads whose memory diverged."""
  lines = []
  for index, layer in enumerate(traces["layer"]):
    value = {name: traces[name][index].astype(np.float64) for name in PER_TOKEN}
    surprise = value["surprise"]  # [heads, T]; medians: one diverging head must not hide the rest
    line = (f"layer {int(layer)}: theta {value['theta'].mean():.4f}  eta {value['eta'].mean():.3f}  "
            f"alpha {value['alpha'].mean():.4f}  surprise {np.median(surprise):.3g}  "
            f"loss {np.median(value['loss_before']):.3g}")
    if needle_span is not None:
      inside = np.zeros(surprise.shape[-1], bool)
      inside[needle_span[0]:needle_span[1]] = True
      if inside.any() and (~inside).any():
        with np.errstate(invalid="ignore", divide="ignore"):
          ratios = np.median(surprise[:, inside], axis=1) / np.median(surprise[:, ~inside], axis=1)
        line += "  surprise needle/elsewhere by head " + ", ".join(f"{r:.2f}" for r in ratios)
    line += (f"  retention of t={int(traces['retention_from'])} at the end "
             f"{value['retention'][:, -1].mean():.3f}")
    for head, row in enumerate(surprise):
      if not np.isfinite(row).all():
        line += f"  [head {head} diverges: non-finite from position {int(np.argmin(np.isfinite(row)))}]"
    lines.append(line)
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def _needle_inputs(config, length: int, depth: float, task: str, haystack: str, index: int):
  """An S-NIAH sample (the recall harness's evaluation seeds): inputs and needle span."""
  from titans_jax.data import tasks
  from titans_jax.evaluation.recall import EVAL_SEED_OFFSET

  source = tasks.NeedleInHaystackSource(seq_len=length, task=task, haystack=haystack, depth=depth,
                                        seed=int(config.seed) + EVAL_SEED_OFFSET)
  sample = source.sample(index)
  span = (int(sample["needle_start"]), int(sample["needle_end"]))
  return sample["inputs"], span, int(sample["answer_start"])


def main(argv=None):
  import argparse

  from titans_jax import train

  parser = argparse.ArgumentParser(description="Per-token traces of a trained model's memory.")
  parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--text", default="", help="trace this text (bytes) instead of an S-NIAH sample")
  parser.add_argument("--niah_length", type=int, default=0,
                      help="S-NIAH context length (default: the training length)")
  parser.add_argument("--depth", type=float, default=0.5, help="S-NIAH needle depth in [0, 1]")
  parser.add_argument("--task", default="", help="passkey | number | uuid (default: as trained)")
  parser.add_argument("--haystack", default="", help="noise | essay (default: as trained)")
  parser.add_argument("--index", type=int, default=0, help="which S-NIAH sample")
  parser.add_argument("--layer", type=int, default=None, help="one model layer (default: all)")
  parser.add_argument("--retention_from", type=int, default=None,
                      help="position whose write is followed (default: the needle start, or 0)")
  parser.add_argument("--out", default="", help="PNG path (default: WORKDIR/traces.png); the "
                      "arrays go next to it as .npz")
  args = parser.parse_args(argv)
  model, config, step = train.load_model(args.workdir, args.step)
  if model.config.input_dim:
    raise ValueError("the CLI traces token models; call memory_traces directly for continuous inputs")
  needle_span = None
  if args.text:
    tokens = np.frombuffer(args.text.encode(), np.uint8).astype(np.int32)
    if tokens.max() >= model.config.vocab_size:
      raise ValueError(f"--text holds byte {tokens.max()} but the model's vocab_size is "
                       f"{model.config.vocab_size}; expected text within the model's vocabulary")
  else:
    tokens, needle_span, _ = _needle_inputs(
        config, args.niah_length or int(config.data.seq_len), args.depth,
        args.task or config.data.get("task", "passkey"),
        args.haystack or config.data.get("haystack", "noise"), args.index)
  source = args.retention_from if args.retention_from is not None else (
      needle_span[0] if needle_span else 0)
  traces = memory_traces(model, tokens, args.layer, retention_from=source)
  out = args.out or os.path.join(args.workdir, "traces.png")
  title = f"{config.model.variant} step {step}: memory traces over {len(tokens)} tokens"
  plot_traces(traces, out, tokens=tokens, needle_span=needle_span, title=title)
  arrays = os.path.splitext(out)[0] + ".npz"
  os.makedirs(os.path.dirname(os.path.abspath(arrays)), exist_ok=True)
  np.savez(arrays, tokens=np.asarray(tokens), **traces)
  print(summarize(traces, needle_span), file=sys.stderr)
  print(f"Traces: {out}\nArrays: {arrays}")


if __name__ == "__main__":
  main()
