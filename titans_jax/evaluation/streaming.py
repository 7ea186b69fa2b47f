"""Loss by position over documents of any length (a million tokens and more): the
document goes through the model in pieces with the state carried, so device memory
stays that of one piece however long the document is.

    from titans_jax.evaluation import streaming
    result = streaming.stream_losses(model, tokens, piece_len=2048)   # nll per position
    curve = streaming.loss_curve(result.nll, bins=16)                # (end position, mean nll)

    python -m titans_jax.evaluation.streaming --workdir=W --text_file=book.txt --out=W/streaming
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass
class StreamResult:
  nll: np.ndarray  # [B, T - 1] float32: -log p(token t + 1 | tokens <= t)
  seconds: float
  cache: object  # the state after the document, to continue it

  @property
  def tokens_per_second(self) -> float:
    return self.nll.size / max(self.seconds, 1e-9)


def _piece_function(model):
  """(tokens [B, L], targets [B, L], cache) -> (nll [B, L], cache); jitted, except for MAC
  whose segment bookkeeping needs Python-int positions (its memory op is still compiled)."""

  def losses(model, tokens, targets, cache):
    logits, cache = model.stream(tokens, cache)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0], cache

  if model.config.variant == "mac":
    return lambda tokens, targets, cache: losses(model, tokens, targets, cache)
  graphdef, state = nnx.split(model)
  compiled = jax.jit(lambda state, tokens, targets, cache: losses(nnx.merge(graphdef, state), tokens,
                                                                   targets, cache),
                     donate_argnums=(3,))
  return lambda tokens, targets, cache: compiled(state, tokens, targets, cache)


def stream_losses(model, tokens, piece_len: int = 2048, *, cache=None,
                  progress: bool = False) -> StreamResult:
  """Per-position negative log-likelihood of `tokens` ([T] or [B, T] ids) under `model`,
  streamed in pieces of piece_len tokens (one compile, plus one for a shorter last piece)."""
  tokens = _checked(model, tokens, piece_len)
  return _stream(model, _piece_function(model), tokens, piece_len, cache, progress)


def _checked(model, tokens, piece_len: int):
  """tokens as int [B, T], or a ValueError that says what is wrong."""
  tokens = np.asarray(tokens)
  if tokens.ndim == 1:
    tokens = tokens[None]
  if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f"tokens have shape {tokens.shape} and dtype {tokens.dtype}; expected token ids "
                     "[length] or [batch, length]")
  if tokens.shape[1] < 2:
    raise ValueError(f"a document of {tokens.shape[1]} token(s) has nothing to predict; expected >= 2")
  if piece_len < 1:
    raise ValueError(f"piece_len={piece_len}; expected >= 1")
  vocab = model.config.vocab_size
  if tokens.min() < 0 or tokens.max() >= vocab:
    raise ValueError(f"token ids span [{tokens.min()}, {tokens.max()}]; expected ids in [0, {vocab})")
  return tokens


def _stream(model, run, tokens, piece_len: int, cache, progress: bool) -> StreamResult:
  batch, length = tokens.shape
  cache = model.init_cache(batch) if cache is None else cache
  nll = np.empty((batch, length - 1), np.float32)
  started = last_report = time.time()
  for start in range(0, length - 1, piece_len):
    end = min(start + piece_len, length - 1)
    losses, cache = run(jnp.asarray(tokens[:, start:end], jnp.int32),
                        jnp.asarray(tokens[:, start + 1:end + 1], jnp.int32), cache)
    nll[:, start:end] = np.asarray(losses)
    if progress and (time.time() - last_report > 5 or end == length - 1):
      last_report = time.time()
      rate = end * batch / (last_report - started)
      print(f"  streamed {end:>9}/{length - 1} tokens  {rate:,.0f} tokens/s  "
            f"mean nll so far {nll[:, :end].mean():.3f}", file=sys.stderr, flush=True)
  return StreamResult(nll=nll, seconds=time.time() - started, cache=cache)


def stream_documents(model, tokens, document_starts, piece_len: int = 2048) -> np.ndarray:
  """Per-position nll [T - 1] of one packed stream (ids [T]) whose documents begin at
  `document_starts`, the state reset to the fresh one (learned W_0, empty caches) at
  each start: every document is read as if it were alone, as packed evaluation wants.
  The token that opens a document is scored under the state of the one before it."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 1:
    raise ValueError(f"tokens have shape {tokens.shape}; expected one packed stream [T]")
  starts = sorted({int(s) for s in document_starts} | {0})
  if starts[-1] >= tokens.shape[0] or starts[0] < 0:
    raise ValueError(f"document_starts {list(document_starts)[:5]}... must lie in [0, {tokens.shape[0]})")
  ends = starts[1:] + [tokens.shape[0] - 1]
  _checked(model, tokens, piece_len)
  run = _piece_function(model)  # one compiled step for every document
  parts = [_stream(model, run, tokens[None, start:end + 1], piece_len, None, False).nll[0]
           for start, end in zip(starts, ends) if end > start]
  return np.concatenate(parts)


def loss_curve(nll, bins: int = 16):
  """Mean nll over log-spaced position bins: ([bins] last position of each bin, [bins]
  mean nll). Log spacing shows the early positions and the far ones alike."""
  nll = np.asarray(nll, np.float64).reshape(-1, np.shape(nll)[-1]).mean(axis=0)
  edges = np.unique(np.concatenate([[0], np.geomspace(1, nll.size, bins).astype(np.int64)]))
  edges[-1] = nll.size
  ends = edges[1:]
  means = np.array([nll[a:b].mean() for a, b in zip(edges[:-1], ends)])
  return ends, means


def save_curve(ends, means, path: str, title: str = "") -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(figsize=(6, 3.5))
  axes.plot(ends, np.exp(means), marker="o")
  axes.set_xscale("log")
  axes.set_xlabel("position in the document (tokens)")
  axes.set_ylabel("perplexity (bin mean)")
  axes.set_title(title or "Loss by position", fontsize=10)
  axes.grid(True, alpha=0.3)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return path


def main(argv=None):
  import argparse

  from titans_jax import train

  parser = argparse.ArgumentParser(description="Loss by position over a long document.")
  parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
  parser.add_argument("--text_file", default="", help="a UTF-8 text file (byte-level tokens)")
  parser.add_argument("--random_tokens", type=int, default=0,
                      help="instead of a file: this many uniform random tokens (a speed check)")
  parser.add_argument("--piece_len", type=int, default=2048)
  parser.add_argument("--bins", type=int, default=16)
  parser.add_argument("--out", default="", help="output folder (default: WORKDIR/streaming)")
  parser.add_argument("--step", type=int, default=None)
  args = parser.parse_args(argv)
  if bool(args.text_file) == bool(args.random_tokens):
    parser.error("give exactly one of --text_file=PATH or --random_tokens=N")
  if args.text_file and not os.path.isfile(args.text_file):
    parser.error(f"--text_file={args.text_file} is not a readable file")
  model, config, step = train.load_model(args.workdir, args.step)
  if args.text_file:
    with open(args.text_file, "rb") as handle:
      tokens = np.frombuffer(handle.read(), np.uint8).astype(np.int32)
  else:
    tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, args.random_tokens)
  result = stream_losses(model, tokens, args.piece_len, progress=True)
  ends, means = loss_curve(result.nll, args.bins)
  out = args.out or os.path.join(args.workdir, "streaming")
  os.makedirs(out, exist_ok=True)
  for end, mean in zip(ends, means):
    print(f"  positions <= {end:>9}: nll {mean:.4f}  perplexity {np.exp(mean):.3f}")
  summary = {"tokens": int(result.nll.size), "seconds": result.seconds,
             "tokens_per_second": result.tokens_per_second, "mean_nll": float(result.nll.mean()),
             "curve": {"end_position": ends.tolist(), "mean_nll": means.tolist()}, "step": step}
  with open(os.path.join(out, "streaming.json"), "w") as handle:
    json.dump(summary, handle, indent=2)
  png = save_curve(ends, means, os.path.join(out, "streaming.png"),
                   f"{config.model.variant} step {step}: perplexity by position")
  print(f"Curve: {os.path.join(out, 'streaming.json')}\nPlot:  {png}")


if __name__ == "__main__":
  main()
