"""A standalone reproduction of the XLA:CPU mis-partitioning behind
`train.validate_activation_constraints` (no titans_jax code; a developer's tool, not part
of the suite):

  python tests/train/xla_partition_repro.py [shardy|gspmd] [pinned|free]

The pattern of MAC's Eqs. 21-23 in a few lines: tokens -> a sharded embedding table ->
the residual stream x, pinned to batch-over-(data, fsdp) ("pinned"); q = x Wq and
h = x Wh; keys of the concatenated [h || x] along time; y = q Wo + (keys of x);
x + y pinned again. On a (2, 2, 2) CPU mesh of data x fsdp x tensor with Megatron / FSDP
parameter shardings, the result differs from one device's by O(1). Measured 2026-12-07:
6.11 with jax 0.10.2, 0.11.2 and 0.12.1 under Shardy (pinned), and with jax 0.10.2 under
GSPMD pinned and also unpinned ("free"); Shardy unpinned is exact (9.5e-7). Variants
tried by hand: projecting h and x apart, stacking them, or dropping h (keys of x alone)
fail the same way; with the keys unused it is exact; with a dense input in place of the
gather it still fails.
Prints the largest difference and exits 1 when it is above float32 rounding: rerun it on
a new jax; once it passes, the refusal in train.py can go (and the zoo test in
tests/train/test_distributed.py will say whether MAC itself then trains right).
"""

import os
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)
PARTITIONER = sys.argv[1] if len(sys.argv) > 1 else "shardy"
PINNED = (sys.argv[2] if len(sys.argv) > 2 else "pinned") == "pinned"
if PARTITIONER == "gspmd":
  jax.config.update("jax_use_shardy_partitioner", False)

import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

BATCH, TIME, WIDTH, VOCAB = 4, 16, 32, 64


def project(x, kernel):
  """[..., d_in] @ [d_in, d_out] as one 2-D matmul (as titans_jax.ops.dense does)."""
  return (x.reshape(-1, x.shape[-1]) @ kernel).reshape(x.shape[:-1] + kernel.shape[-1:])


def pin(x):
  """Batch over (data, fsdp), the other axes left to the partitioner."""
  if not PINNED or jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(
      x, P(("data", "fsdp"), P.UNCONSTRAINED, P.UNCONSTRAINED))


def block(tokens, embedding, w_q, w_h, w_k, w_o):
  x = pin(embedding[tokens])
  q, h = project(x, w_q), project(x, w_h)
  keys = project(jnp.concatenate([h, x], axis=1), w_k)  # [h || x] along time
  y = project(1.5 * q, w_o) + 0.01 * keys[:, TIME:]
  return pin(x + y)


def main() -> int:
  keys = jax.random.split(jax.random.key(0), 6)
  tokens = jax.random.randint(keys[0], (BATCH, TIME), 0, VOCAB)
  embedding = jax.random.normal(keys[1], (VOCAB, WIDTH))
  w_q, w_h, w_k, w_o = (jax.random.normal(k, (WIDTH, WIDTH)) / 6 for k in keys[2:])
  args = (tokens, embedding, w_q, w_h, w_k, w_o)
  single = jax.jit(block)(*args)

  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  # The zoo's rules: batch over (data, fsdp); vocab, heads over tensor; embed over fsdp.
  specs = (P(("data", "fsdp")), P("tensor", "fsdp"), P("fsdp", "tensor"), P("fsdp", "tensor"),
           P("fsdp", "tensor"), P("tensor", "fsdp"))
  with jax.set_mesh(mesh):
    placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs)]
    sharded = jax.jit(block)(*placed)
  error = float(jnp.max(jnp.abs(single - sharded)))
  print(f"jax {jax.__version__}, {PARTITIONER}, {'pinned' if PINNED else 'free'}: "
        f"largest difference from one device {error:.3g}")
  return 0 if error < 1e-4 else 1


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
