"""Run as a subprocess with 2 CPU devices: the memory op and its reference inside
`jax.shard_map` (batch rows split over a "data" axis, initial weights replicated), against
the same calls on one device. Prints, per op, the largest difference of the loss and
every gradient relative to the largest magnitude among them, as JSON.

  python tests/ops/shard_map_probe.py
"""

import json

import jax

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, PartitionSpec as P  # noqa: E402

from titans_jax.ops import (MemoryConfig, init_memory_state, init_memory_weights,  # noqa: E402
                            memory_apply, memory_apply_reference)

BATCH, HEADS, LENGTH, DIM = 4, 2, 11, 4
CONFIG = MemoryConfig(depth=2, chunk_size=4, expansion=2.0)


def loss(op, w0, q, k, v, gates):
  """Squared outputs of two chained calls (cut at 5: the state is carried), plus the
  squared final weights, summed."""
  state = init_memory_state(w0, q.shape[0])
  total = 0.0
  for start, stop in ((0, 5), (5, LENGTH)):
    piece = lambda x: x[..., start:stop, :] if x.ndim == 4 else x[..., start:stop]
    y, state = op(CONFIG, state, piece(q), piece(k), piece(v),
                  *(piece(g) for g in gates))
    total = total + jnp.sum(y ** 2)
  return total + sum(jnp.sum(w ** 2) for w in state.weights)


def main():
  keys = jax.random.split(jax.random.key(0), 7)
  w0 = init_memory_weights(keys[0], num_heads=HEADS, d_in=DIM, d_out=DIM, config=CONFIG,
                           dtype=jnp.float64)
  q, k, v = (jax.random.normal(keys[i], (BATCH, HEADS, LENGTH, DIM), jnp.float64) / 2
             for i in (1, 2, 3))
  gates = tuple(jax.random.uniform(keys[4 + i], (BATCH, HEADS, LENGTH), jnp.float64, 0.0, high)
                for i, high in enumerate((0.1, 0.9, 0.1)))  # theta, eta, alpha
  mesh = Mesh(jax.devices(), ("data",))
  rows = P("data")
  report = {}
  for name, op in (("fast", memory_apply), ("reference", memory_apply_reference)):
    value_and_grad = jax.value_and_grad(lambda *a: loss(op, *a), argnums=(0, 1, 2, 3, 4))

    def per_shard(*args):
      value, grads = value_and_grad(*args)
      # The initial weights are replicated (invariant over "data"): shard_map's autodiff
      # already sums their gradient over the shards' rows.
      return jax.lax.psum(value, "data"), grads

    sharded = jax.jit(jax.shard_map(
        per_shard, mesh=mesh, in_specs=(P(), rows, rows, rows, (rows,) * 3),
        out_specs=(P(), (P(), rows, rows, rows, (rows,) * 3))))
    expected = jax.jit(value_and_grad)(w0, q, k, v, gates)
    got = sharded(w0, q, k, v, gates)
    differences = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), got, expected)
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(expected))
    report[name] = {"relative_difference": max(jax.tree.leaves(differences)) / scale,
                    "value": float(expected[0])}
  print(json.dumps(report))


if __name__ == "__main__":
  main()
