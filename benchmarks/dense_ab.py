"""A dense projection's forward + backward: `jax.lax.dot_general` on [B, T, d] vs `ops.dense`.

  python benchmarks/dense_ab.py                       # the memory layer's q/k/v projection
  python benchmarks/dense_ab.py --tokens=4096 --d_in=512 --d_out=1536 --rounds=9

The step is the memory block's input path: x [B, T, d_in] @ W, SiLU, split into q / k / v
heads [B, H, T, d], l2-normalised q / k, and a scalar loss; gradients into x and W. Both
forms compile once and then alternate, round by round, in this one process (a slow spell
of a shared machine falls on both); the per-round ratio (2-D / plain, lower is faster) and
its median are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import ratio_summary  # noqa: E402  (the benchmarks' shared helpers)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--tokens", type=int, default=8192)
  parser.add_argument("--d_in", type=int, default=256)
  parser.add_argument("--d_out", type=int, default=768, help="3 x heads x head_dim")
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=7)
  args = parser.parse_args()
  if args.d_out % (3 * args.heads):
    raise SystemExit(f"--d_out={args.d_out} must split into q / k / v of --heads={args.heads} "
                     f"heads each (a multiple of {3 * args.heads})")

  import jax
  import jax.numpy as jnp

  from titans_jax.ops.dense import dot_general_2d

  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (args.batch, args.tokens, args.d_in))
  kernel = args.d_in ** -0.5 * jax.random.normal(keys[1], (args.d_in, args.d_out))
  head_dim = args.d_out // (3 * args.heads)
  probe = jax.random.normal(keys[2], (args.batch, args.heads, args.tokens, head_dim))

  def step(dot_general):
    def loss(kernel, x):
      projected = dot_general(x, kernel, (((2,), (0,)), ((), ())))
      heads = [t.reshape(args.batch, args.tokens, args.heads, head_dim).transpose(0, 2, 1, 3)
               for t in jnp.split(jax.nn.silu(projected), 3, axis=-1)]
      q, k, v = heads
      q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
      k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
      return jnp.sum((q + k * v) * probe)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  forms = {"plain": step(jax.lax.dot_general), "2-D": step(dot_general_2d)}
  for fn in forms.values():
    jax.block_until_ready(fn(kernel, x))  # compile

  def seconds(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn(kernel, x))
    return time.perf_counter() - start

  print(f"x [{args.batch}, {args.tokens}, {args.d_in}] @ W [{args.d_in}, {args.d_out}], "
        f"forward + backward, {jax.devices()[0].platform}", flush=True)
  ratios = []
  for index in range(args.rounds):
    order = list(forms) if index % 2 == 0 else list(forms)[::-1]
    times = {name: seconds(forms[name]) for name in order}
    ratios.append(times["2-D"] / times["plain"])
    print(f"round {index + 1}: plain {1e3 * times['plain']:.1f} ms, 2-D {1e3 * times['2-D']:.1f} ms, "
          f"ratio {ratios[-1]:.3f}", flush=True)
  print(ratio_summary(ratios, "2-D / plain"))


if __name__ == "__main__":
  main()
