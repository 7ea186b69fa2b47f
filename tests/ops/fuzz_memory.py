"""Random configurations of the memory op against the token-by-token reference, in float64:
outputs and final state, whole and cut at random points, and (with --grads) the gradients
into every input and the initial weights. A developer's tool, not part of the suite (the
suite's fixed cases are `test_memory.py`'s RANDOM_CASES):

  python -m tests.ops.fuzz_memory --seed=11 --cases=150 [--grads]

Cases whose reference diverges (|y| >= 1e6: a step size past the memory's stability bound)
are skipped: there both paths only agree on overflowing. Exits 1 on any mismatch.
Some cases set eta or alpha at one token to an end of its domain (0 or 1; with --grads
1e-7 inside it).
"""

import argparse
import random
import sys

import jax
import jax.numpy as jnp
import numpy as np

from tests.ops.test_memory import assert_states_close, make_inputs, run_split
from titans_jax.ops import MemoryConfig, init_memory_state, memory_apply, memory_apply_reference


def random_case(rng: random.Random):
  """(config, length, d_in, d_out, batch, heads, split points, gates set to a domain end)."""
  d_in = rng.choice([2, 3, 4, 6])
  d_out = rng.choice([d_in, d_in, 2, 5])
  config = MemoryConfig(
      depth=rng.randint(1, 4), chunk_size=rng.choice([1, 2, 3, 5, 8, 13, 16, 31, 64]),
      expansion=rng.choice([0.5, 1.0, 2.0, 4.0]), retrieval=rng.choice(["token", "chunk"]),
      momentum=rng.random() < 0.8, forgetting=rng.random() < 0.8,
      gate_mode=rng.choice(["token", "token", "chunk"]),
      activation=rng.choice(["silu", "gelu", "identity"]),
      remat_chunks=rng.choice([None, None, 0, 1, 2, 3]),
      residual=d_in == d_out and rng.random() < 0.3)
  length = rng.randint(1, 100)
  splits = sorted({rng.randint(1, length - 1) for _ in range(rng.randint(0, 3))}) if length > 1 else []
  ends = [(gate, rng.randrange(length), rng.choice([0.0, 1.0])) for gate in (4, 5)
          if rng.random() < 0.3]  # eta or alpha exactly 0 or 1 at one token
  return config, length, d_in, d_out, rng.randint(1, 3), rng.randint(1, 3), splits, ends


def check_case(seed, case, grads: bool) -> str:
  """'' when the fast path equals the reference, 'diverged' when skipped, else the mismatch."""
  config, length, d_in, d_out, batch, heads, splits, ends = case
  weights, inputs = make_inputs(seed, config, batch=batch, heads=heads, length=length,
                                d_in=d_in, d_out=d_out)
  inputs = list(inputs)
  for gate, t, value in ends:
    # With --grads 1e-7 inside the domain: at eta = 0 or alpha = 1 exactly the log-space
    # products give that gate a zero gradient (README, the op's notes).
    inputs[gate] = inputs[gate].at[..., t].set(abs(value - 1e-7) if grads else value)
  state = init_memory_state(weights, batch_size=batch)
  y_ref, state_ref = memory_apply_reference(config, state, *inputs)
  if not np.all(np.abs(np.asarray(y_ref)) < 1e6):
    return "diverged"
  try:
    for op in (memory_apply, lambda *a: run_split(memory_apply, *a[:2], a[2:], splits)):
      y, final = op(config, state, *inputs)
      np.testing.assert_allclose(y, y_ref, rtol=1e-8, atol=1e-9)
      assert_states_close(final, state_ref, 1e-8, 1e-9)
    if grads:
      keys = jax.random.split(jax.random.key(seed), 1 + len(weights))
      probe = jax.random.normal(keys[0], y_ref.shape, jnp.float64)
      weight_probes = [jax.random.normal(key, w.shape, jnp.float64)
                       for key, w in zip(keys[1:], state_ref.weights)]

      # Through the outputs and the final weights, each against a random probe. Linear in
      # both: a nonlinear term of the final weights (sin) is ill-conditioned once they are
      # large (1e7 in seed 1811's case 9: cos(W) then differs 4e-7 between two float64
      # paths whose W agree to 1e-16).
      def loss(op, w, xs):
        y, final = op(config, init_memory_state(w, batch_size=batch), *xs)
        return jnp.sum(y * probe) + sum(jnp.sum(x * p) for x, p in zip(final.weights, weight_probes))

      want = jax.grad(lambda w, xs: loss(memory_apply_reference, w, xs), (0, 1))(weights, inputs)
      got = jax.jit(jax.grad(lambda w, xs: loss(memory_apply, w, xs), (0, 1)))(weights, inputs)
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7 * float(np.max(np.abs(b))) + 1e-9)
  except AssertionError as error:
    return str(error)[:600]
  return ""


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cases", type=int, default=50)
  parser.add_argument("--grads", action="store_true", help="also compare the gradients")
  args = parser.parse_args(argv)
  rng, counts = random.Random(args.seed), {"passed": 0, "diverged": 0, "failed": 0}
  with jax.enable_x64(True):
    for index in range(args.cases):
      jax.clear_caches()  # every case compiles new shapes; see WORKSPACE.md (max_map_count)
      case = random_case(rng)
      outcome = check_case(args.seed * 100_000 + index, case, args.grads)
      counts[{"": "passed", "diverged": "diverged"}.get(outcome, "failed")] += 1
      if outcome not in ("", "diverged"):
        print(f"FAIL case {index}: {case}\n{outcome}", flush=True)
  print(", ".join(f"{count} {name}" for name, count in counts.items()))
  return 1 if counts["failed"] else 0


if __name__ == "__main__":
  sys.exit(main())
