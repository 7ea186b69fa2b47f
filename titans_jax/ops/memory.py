"""The neural long-term memory, chunk-parallel (paper Eqs. 16-18, `spec/memory.md`).

Inside a chunk every gradient is taken at the chunk-start weights W_0, so the
per-token gradients u_j = h_j^T delta_j are independent matmuls, and momentum and
forgetting are linear recurrences solved in closed form:

  S_i = E_{0->i} S_run - sum_{j<=i} theta_j E_{j->i} u_j
  W_i = A_{0->i} W_run + D_i S_run - sum_{j<=i} C[i, j] u_j
  C[i, j] = theta_j sum_{m=j..i} A_{m->i} m_m E_{j->m},  D_i = sum_{m<=i} A_{m->i} m_m E_{0->m}

with E products of eta, A products of (1 - alpha) (log space), m_m = 1 for real
tokens and 0 for padding. Reading x through W_i never builds W_i:
x W_i = A_{0->i} x W_run + D_i x S_run - sum_j C[i, j] (x . h_j) delta_j, a masked
b x b matmul per layer (the dual form of TTT). Only the chunk-to-chunk step is
non-linear; it runs as `lax.scan`, in rematerialised groups of chunks.

Stages: validate -> pad to whole chunks -> gate products -> scan over chunks (layers wider
in than out stored transposed, `stored_transposed`) -> unpad.

For the backward pass each chunk keeps its entering state and the matmul results named
in SAVED_FOR_BACKWARD (`_saved`); the rest of the chunk (elementwise) is recomputed.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from titans_jax.ops.activations import get_activation, value_and_derivative
from titans_jax.ops.memory_types import (MemoryConfig, MemoryState, is_int, is_static_position,
                                         state_dtype, validate_inputs, validate_resets, vary_like)

# ----------------------------------------------------------------------------
# What the backward pass keeps of a chunk
# ----------------------------------------------------------------------------

# Matmul results a chunk's backward pass reads (names of `_saved`): the keys' hidden
# pre-activations and backprop signals, the reads of the running weights and momentum
# (only for layers narrower out than in, `_scaled_read`), the queries' hidden
# pre-activations, the x h^T products and the gate coefficients. Recomputing them was ~25%
# of the step's matmul work; keeping them costs ~0.3 MB per (row, head) and chunk of 64 for
# the benchmark's memory (`residual_bytes_per_chunk`).
SAVED_FOR_BACKWARD = ("keys_z", "keys_delta", "reads_w", "reads_s", "reads_z", "reads_xh",
                      "coefficients")


# What a remat group keeps of every chunk in it (a subset of SAVED_FOR_BACKWARD): the gate-only
# coefficients, ~17 KB per (row, head) and chunk of 64 (a b x b matrix and two b vectors),
# so each group's replay in the backward pass skips their exp / masked-matmul work: 0.958x
# and 0.892x the op step at 32K in two paired runs on one core each (`benchmarks/op_ab.py
# --length=32768 --steps=2`, 4 rounds), for ~0.1 GB more at 32K. Keeping the reads' results
# too was faster still (31.2K vs 27.7K tokens/s on 2 devices) but took 32K to 4.2 GB.
GROUP_SAVED = ("coefficients",)


def _saved(x, name):
  """Marks x as kept for the backward pass (see SAVED_FOR_BACKWARD)."""
  return checkpoint_name(x, f"titans_memory.{name}")


def residual_bytes_per_chunk(config: MemoryConfig, dims, itemsize: int) -> int:
  """Bytes of SAVED_FOR_BACKWARD per (row, head) and chunk, token retrieval (the larger)."""
  b, hidden, outs = config.chunk_size, dims[1:-1], dims[1:]
  output_scaled = [d_out for d_in, d_out in zip(dims[:-1], dims[1:]) if d_in > d_out]
  floats = (b * (2 * sum(hidden) + sum(outs) + 2 * sum(output_scaled))
            + (config.depth + 1) * b * b + 4 * b)
  return floats * itemsize


# ----------------------------------------------------------------------------
# Layer weights as the chunk step stores them
# ----------------------------------------------------------------------------

# Inside the scan a layer whose input is wider than its output (depth 2's second layer,
# [256, 64]) is stored transposed. Its chunk-end updates and weight gradients then come
# out of matmuls with the wide axis minor ([64, 256] outputs), which XLA:CPU runs ~1.4x
# faster than the tall [256, 64] ones; the call transposes the state once going in and out.


def stored_transposed(weights) -> tuple[bool, ...]:
  """Per layer: kept as W^T inside the scan (d_in > d_out). weights: [..., d_in, d_out]."""
  return tuple(w.shape[-2] > w.shape[-1] for w in weights)


def _to_layout(weights, transposed):
  """Between the state's [.., d_in, d_out] and the scan's layout (its own inverse)."""
  return tuple(jnp.swapaxes(w, -1, -2) if t else w for w, t in zip(weights, transposed))


def _times(x, w, transposed):
  """x @ W for a layer stored as w."""
  return x @ w.T if transposed else x @ w


def _times_transpose(delta, w, transposed):
  """delta @ W^T (backprop through the layer) for a layer stored as w."""
  return delta @ w if transposed else delta @ w.T


def _outer(h, delta, transposed):
  """h^T @ delta, in the layer's stored layout."""
  return delta.T @ h if transposed else h.T @ delta


def _scaled_outer(h, delta, factor, transposed):
  """h^T @ (factor[:, None] * delta) in the layer's stored layout, the per-token factor
  on the narrower of h and delta (the same product: it scales the contracted token rows).

  For depth 2's first layer that scales k [b, 64] instead of delta [b, 256]: 0.977x and
  0.971x the op step at 8K (`benchmarks/op_ab.py --length=8192 --steps=2`, 4 and 6 rounds)."""
  if h.shape[-1] < delta.shape[-1]:
    return _outer(factor[:, None] * h, delta, transposed)
  return _outer(h, factor[:, None] * delta, transposed)


# ----------------------------------------------------------------------------
# Gate products in log space
# ----------------------------------------------------------------------------


def safe_log(x):
  """log(x) with exact -inf at 0 and finite gradients everywhere else.

  NaN for a NaN or negative x (a gate outside its domain), as log gives: the products
  then turn the outputs NaN, where reading it as a zero gate would hide it. At x = 0 the
  gradient is 0, so a product's gradient into a zero gate is 0 (exp(sum log) / gate has
  no value there; the token loop's is the product of the other gates)."""
  positive = x > 0
  outside = jnp.where(x == 0, -jnp.inf, jnp.nan).astype(x.dtype)
  return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), outside)


def segment_products(log_gate):
  """P[i, j] = prod_{m=j+1..i} gate_m for j <= i, else 0.  log_gate: [b] -> [b, b].

  exp(L_i - L_j) of prefix sums L of the log gates, the zero gates (log -inf) left out of
  L and counted apart: a span that holds one is an exact 0, never -inf - -inf. Only O(b^2)
  sums and one exp per pair. Against the masked b x b x b matmul of the spans' sums it
  replaced, paired (`benchmarks/op_ab.py --baseline=<before> --steps=2`): the op step at 8K
  0.969x (8 rounds), the layer 0.953x (`--layer`, 8 rounds), 32K 0.926x (`--steps=1`, 4
  rounds), chunk retrieval 0.934x. L is taken from the chunk's middle (halves |L|, so
  the rounding of L_i - L_j): in float32 the products' relative error is ~1e-6 mean,
  <= 1.5e-5, for gates in [1e-4, 1) (the masked sums: <= 2.8e-5), <= 5e-5 for gates
  below 1e-2.
  A NaN gate (outside its domain) turns the chunk's products NaN.
  """
  size = log_gate.shape[-1]
  rows = jnp.arange(size)[:, None]
  cols = jnp.arange(size)[None, :]
  is_zero = log_gate == -jnp.inf
  # L_i = sum_{m<=i} - sum_{m<=middle} (a +-1 mask), and the zero counts likewise (exact
  # integers in float), as one [b, b] @ [b, 2] matmul: cumsum's reduce-window gets fused
  # into the b x b exp below and summed again for every pair. HIGHEST: on TPU / GPU a
  # default-precision float32 matmul rounds through bfloat16 / TF32.
  terms = jnp.stack([jnp.where(is_zero, 0.0, log_gate), is_zero.astype(log_gate.dtype)], -1)
  signed = (cols <= rows).astype(log_gate.dtype) - (cols <= size // 2).astype(log_gate.dtype)
  sums = jnp.matmul(signed, terms, precision=jax.lax.Precision.HIGHEST)
  prefix, zeros_before = sums[:, 0], sums[:, 1]
  # Causal and no zero gate in (j, i]; the inner where keeps exp off the j > i entries,
  # whose difference may overflow.
  open_span = (rows >= cols) & (zeros_before[:, None] == zeros_before[None, :])
  return jnp.where(open_span, jnp.exp(jnp.where(open_span, prefix[:, None] - prefix[None, :], 0.0)),
                   0.0)


# ----------------------------------------------------------------------------
# One chunk for one (batch row, head)
# ----------------------------------------------------------------------------


def _keys_forward_backward(w_grad, keys, values, activation, residual, transposed, first_z=None):
  """Layer inputs h_{l-1} and backprop signals delta_l of l(W_grad; k_j, v_j) per token.

  first_z: keys @ W_grad[0] when the caller has it already."""
  layer_inputs, derivatives = [], []
  h = keys
  for index, w in enumerate(w_grad):
    layer_inputs.append(h)
    z = first_z if index == 0 and first_z is not None else _times(h, w, transposed[index])
    if index < len(w_grad) - 1:
      h, dh = value_and_derivative(activation, _saved(z, "keys_z"))
      derivatives.append(dh)
    else:
      h = z
  output = h + keys if residual else h
  delta = _saved(2.0 * (output - values), "keys_delta")  # d/d out of ||out - v||^2 (Eq. 12)
  deltas = [delta]
  for index in range(len(w_grad) - 1, 0, -1):
    delta = _saved(_times_transpose(delta, w_grad[index], transposed[index])
                   * derivatives[index - 1], "keys_delta")
    deltas.append(delta)
  return layer_inputs, deltas[::-1]


def _mlp_forward(weights, x, activation, residual, transposed=None):
  h = x
  for index, w in enumerate(weights):
    h = _times(h, w, transposed[index]) if transposed else h @ w
    if index < len(weights) - 1:
      h = activation(h)
  return h + x if residual else h


def read_factors(log_eta, log_keep, write):
  """A_{0->i} and D_i of every chunk at once (last axis: the chunk's b tokens).

  The two per-token factors of the token reads (x A_{0->i} W_run + x D_i S_run). Computed
  before the chunk scan, so that inside a chunk the reads never wait for the b x b gate
  products. D_i = sum_{m<=i} A_{m->i} m_m E_{0->m} is the linear recurrence
  D_i = (1 - alpha_i) D_{i-1} + m_i E_{0->i}, solved by an associative scan (no division).
  """
  keep_from_start = jnp.exp(jnp.cumsum(log_keep, axis=-1))
  written_momentum = write * jnp.exp(jnp.cumsum(log_eta, axis=-1))
  combine = lambda first, second: (first[0] * second[0], second[0] * first[1] + second[1])
  _, carried_momentum = jax.lax.associative_scan(
      combine, (jnp.exp(log_keep), written_momentum), axis=-1)
  return keep_from_start, carried_momentum


def _chunk_coefficients(theta, log_eta, log_keep, write, reset=None, factors=None):
  """Gate-only terms of Eqs. 16-18 for one chunk (no dependence on the weights).

  Returns C [b, b], D [b], A_{0->i} [b], E_{0->i} [b] and theta_j E_{j->b} [b], the ones
  computed here marked for the backward pass; `factors`: (A_{0->i}, D_i) from
  `read_factors`. With `reset` [b] (document starts) also which base state each token
  reads (`_reset_coefficients`).
  """
  if reset is not None:
    return jax.tree.map(lambda c: _saved(c, "coefficients"),
                        _reset_coefficients(theta, log_eta, log_keep, write, reset))
  momentum_decay = segment_products(log_eta)   # E_{j->i} at [i, j]
  keep = segment_products(log_keep)            # A_{m->i} at [i, m]
  momentum_from_start = jnp.exp(jnp.cumsum(log_eta))  # E_{0->i}
  keep_written = keep * write[None, :]
  coeff = (keep_written @ momentum_decay) * theta[None, :]   # C[i, j]
  last_momentum = theta * momentum_decay[-1]                 # theta_j E_{j->b}
  if factors is None:
    keep_from_start = _saved(jnp.exp(jnp.cumsum(log_keep)), "coefficients")  # A_{0->i}
    carried_momentum = _saved(keep_written @ momentum_from_start, "coefficients")  # D_i
  else:
    keep_from_start, carried_momentum = factors
  return (_saved(coeff, "coefficients"), carried_momentum, keep_from_start,
          _saved(momentum_from_start, "coefficients"), _saved(last_momentum, "coefficients"))


def _reset_coefficients(theta, log_eta, log_keep, write, reset):
  """The same terms when documents start inside the chunk.

  A document start r cuts every product across it (no gradient, momentum or weight
  of an earlier document reaches a later one) and restarts the base state: tokens
  from r on grow from the reset state instead of the state entering the chunk, with
  products counted from r. `run` numbers the pieces between starts (0: before any).
  """
  cut = lambda log_gate: jnp.where(reset, -jnp.inf, log_gate)
  momentum_decay = segment_products(cut(log_eta))
  keep = segment_products(cut(log_keep))
  run = jnp.cumsum(reset.astype(jnp.int32))
  positions = jnp.arange(run.shape[0])
  same_run = (run[:, None] == run[None, :]) & (positions[None, :] <= positions[:, None])
  from_run_start = lambda log_gate: jnp.exp(jnp.sum(jnp.where(same_run, log_gate[None, :], 0.0), axis=1))
  momentum_from_start = from_run_start(log_eta)  # E_{s_i - 1 -> i}, s_i the start of i's run
  keep_from_start = from_run_start(log_keep)     # A_{s_i - 1 -> i}
  keep_written = keep * write[None, :]
  coeff = (keep_written @ momentum_decay) * theta[None, :]
  carried_momentum = keep_written @ momentum_from_start
  last_momentum = theta * momentum_decay[-1]
  # Which weights a token's gradient is taken at: the chunk's (no start yet), the reset
  # state's running weights (a start at the chunk boundary: the chunk begins there), or
  # the reset state's chunk-start weights (a start inside the chunk).
  base_is_reset = run > 0
  grad_at_reset_weights = reset[0] & (run == 1)
  return (coeff, carried_momentum, keep_from_start, momentum_from_start, last_momentum,
          base_is_reset, grad_at_reset_weights)


def _select(flags, when_true, when_false):
  """Per token (flags [b]) pick rows of two [b, ...] arrays."""
  return jnp.where(flags.reshape(flags.shape + (1,) * (when_true.ndim - 1)), when_true, when_false)


def _pick(flag, when_true, when_false):
  """One scalar flag over two tuples of weight arrays."""
  return tuple(jnp.where(flag, a, b) for a, b in zip(when_true, when_false))


def _scales_input(w, transposed) -> bool:
  """Whether a per-token factor scales a layer's input rows rather than its output rows:
  the layer (stored as w) is at least as wide out as in."""
  d_in, d_out = w.shape[-2:][::-1] if transposed else w.shape[-2:]
  return d_in <= d_out


def _scaled_read(factor, x, read, scales_input, name):
  """factor[:, None] * read(x) for a linear read [b, d_in] -> [b, d_out], on the narrower side.

  The factor's gradient is a row sum over that side: scaling the input rows needs no
  matmul result kept for the backward pass; scaling the output keeps read(x) (`name`)."""
  if scales_input:
    return read(factor[:, None] * x)
  return factor[:, None] * _saved(read(x), name)


def _chunk_step(config, transposed, carry, chunk):
  """Advance (W_run, S_run, W_grad) over one chunk; returns outputs [b, d_out].

  Weights are in the scan's layout (`transposed`, see `stored_transposed`). With document
  starts in the chunk, the carry also holds the reset state (W, S, W_grad) that every
  document starts from."""
  activation = get_activation(config.activation)
  w_run, s_run, w_grad = carry[:3]
  tracks_chunk_start = w_grad is not None
  if not tracks_chunk_start:  # every chunk of the call starts fresh: W_grad is W_run there
    w_grad = w_run
  q, k, v, gate_terms, completes = chunk
  # Gate-only terms, per chunk inside the scan (never a chunks x b x b array up front); each
  # chunk keeps its own for the backward pass (SAVED_FOR_BACKWARD), b x b per (row, head).
  # Without document starts the reads' factors A_{0->i}, D_i come in with the chunk.
  coefficients = _chunk_coefficients(*gate_terms)
  coeff, carried_momentum, keep_from_start, momentum_from_start, last_momentum = coefficients[:5]
  resets = len(coefficients) > 5
  forward_backward = lambda w, first_z=None: _keys_forward_backward(
      w, k, v, activation, config.residual, transposed, first_z)

  first_reads = None
  if not tracks_chunk_start and not resets and config.retrieval == "token":
    # Keys and queries meet the same first-layer weights here: one matmul of twice the rows
    # (and one weight gradient in the backward pass instead of two summed). The queries come
    # already scaled by A_{0->i} (see the token reads below).
    scales_input = _scales_input(w_run[0], transposed[0])
    reads_in = keep_from_start[:, None] * q if scales_input else q
    keys_z, first_reads = jnp.split(
        _times(jnp.concatenate([k, reads_in]), w_run[0], transposed[0]), 2)
    if not scales_input:
      first_reads = keep_from_start[:, None] * _saved(first_reads, "reads_w")
    layer_inputs, deltas = forward_backward(w_grad, keys_z)
  else:
    layer_inputs, deltas = forward_backward(w_grad)
  if resets:
    w_reset, s_reset, w_grad_reset = carry[3]
    base_is_reset, grad_at_reset_weights = coefficients[5:]
    # Each token's gradient at its own chunk-start weights (three candidates, Eq. 16).
    for candidate, flags in ((w_grad_reset, base_is_reset), (w_reset, grad_at_reset_weights)):
      inputs_c, deltas_c = forward_backward(candidate)
      layer_inputs = [_select(flags, a, b) for a, b in zip(inputs_c, layer_inputs)]
      deltas = [_select(flags, a, b) for a, b in zip(deltas_c, deltas)]

  def base_read(x, index, weights, reset_weights):
    out = _times(x, weights[index], transposed[index])
    return (_select(base_is_reset, _times(x, reset_weights[index], transposed[index]), out)
            if resets else out)

  if config.retrieval == "token":
    x = q
    for index in range(config.depth):
      # x W_i without W_i: decayed running weights + carried momentum + this chunk's updates.
      # The per-token factors A_{0->i}, D_i scale the narrower side of each read
      # (`_scaled_read`): for a layer at least as wide out as in, the rows of x, so no
      # matmul result is kept for their gradients. The update's sign rides on the b x b
      # coefficients.
      scales_input = _scales_input(w_run[index], transposed[index])
      if index == 0 and first_reads is not None:
        x_w_run = first_reads
      else:
        x_w_run = _scaled_read(keep_from_start, x, lambda y: base_read(
            y, index, w_run, w_reset if resets else None), scales_input, "reads_w")
      x_s_run = _scaled_read(carried_momentum, x, lambda y: base_read(
          y, index, s_run, s_reset if resets else None), scales_input, "reads_s")
      x_h = _saved(x @ layer_inputs[index].T, "reads_xh")
      z = x_w_run + x_s_run + ((-coeff) * x_h) @ deltas[index]
      x = activation(_saved(z, "reads_z")) if index < config.depth - 1 else z
    y = x + q if config.residual else x
  else:
    read = lambda weights: _mlp_forward(weights, q, activation, config.residual, transposed)
    y = read(w_grad)
    if resets:
      y = _select(base_is_reset, read(w_grad_reset), y)
      y = _select(grad_at_reset_weights, read(w_reset), y)

  w_base, s_base, w_grad_last = w_run, s_run, w_grad
  if resets:  # the chunk's last token grows from the reset state once a document started
    w_base, s_base = _pick(base_is_reset[-1], w_reset, w_run), _pick(base_is_reset[-1], s_reset, s_run)
    w_grad_last = _pick(grad_at_reset_weights[-1], w_reset,
                        _pick(base_is_reset[-1], w_grad_reset, w_grad))
  w_end, s_end = [], []
  for index in range(config.depth):
    h, delta = layer_inputs[index], deltas[index]
    layout = transposed[index]
    w_end.append(keep_from_start[-1] * w_base[index] + carried_momentum[-1] * s_base[index]
                 + _scaled_outer(h, delta, -coeff[-1], layout))
    s_end.append(momentum_from_start[-1] * s_base[index]
                 + _scaled_outer(h, delta, -last_momentum, layout))
  w_end, s_end = tuple(w_end), tuple(s_end)
  # The next chunk's gradients are taken where this chunk ends, once it is complete.
  w_grad_next = (jax.tree.map(lambda a, b: jnp.where(completes, a, b), w_end, w_grad_last)
                 if tracks_chunk_start else None)
  return (w_end, s_end, w_grad_next) + tuple(carry[3:]), y


# ----------------------------------------------------------------------------
# Scan over chunks, rematerialised in groups
# ----------------------------------------------------------------------------


# Saving every chunk's (W, S, W_grad) and SAVED_FOR_BACKWARD is the fastest schedule; past
# this many bytes per call the chunks are grouped and only each group's entering state is
# kept (the backward pass then runs each group's forward again). 2 GiB: the benchmark
# layer's 8K tokens (batch 4, 4 heads) fit (1.6 GB), 32K is grouped.
AUTO_GROUP_BYTES = 2 << 30


def remat_group_size(config: MemoryConfig, num_chunks: int, chunk_bytes: int = 0,
                     entry_bytes: int = 0) -> int:
  """Chunks per checkpointed group (0: no groups).

  Auto (remat_chunks None): no groups while what num_chunks chunks keep (chunk_bytes
  each) fits in AUTO_GROUP_BYTES. Past that, groups of g chunks keep num_chunks / g
  entering states (entry_bytes each) and, while the backward pass replays one group, g
  chunks' worth: the group size is the divisor of num_chunks nearest the g that
  minimises num_chunks / g * entry_bytes + g * chunk_bytes, sqrt(num_chunks * entry_bytes
  / chunk_bytes) (without entry_bytes: sqrt(num_chunks)).

  For the benchmark layer at 32K (512 chunks; a chunk keeps its three states and ~0.3 MB
  of matmul results per (row, head), a group only the states) that is 16 where
  sqrt(512) gave 32, ~75 MB less per device (the model above), and 0.94x the layer step
  (`benchmarks/op_ab.py --layer --length=32768 --steps=1`: median of 14 paired rounds in
  three runs, 0.86-1.08, on a 2-core Intel Xeon). Groups of 8 measured 1.01x, of 64 1.08x.
  """
  if config.remat_chunks == 0 or num_chunks <= 1:
    return 0
  if config.remat_chunks is not None:
    return min(config.remat_chunks, num_chunks)
  if num_chunks * chunk_bytes <= AUTO_GROUP_BYTES:
    return 0
  ratio = entry_bytes / chunk_bytes if entry_bytes and chunk_bytes else 1.0
  target = max(1.0, math.sqrt(num_chunks * ratio))
  divisors = [g for g in range(1, num_chunks + 1) if num_chunks % g == 0]
  # Nearest in log space; of two equally near (g and 2g around a power of two), the smaller.
  best = min(divisors, key=lambda g: (round(abs(math.log(g / target)), 9), g))
  # A prime count has no useful divisor: pad whole chunks instead.
  return best if best >= target / 2 else int(math.ceil(target))


def _scan_chunks(config, transposed, carry, chunks, group):
  """chunks: pytree with leading axes [n, B, H, ...] (n a multiple of group); carry: [B, H, ...]
  with weights in the scan's layout (`transposed`).

  Unless remat is off (remat_chunks=0), each chunk keeps its entering state and the
  matmul results of SAVED_FOR_BACKWARD; its backward pass recomputes the elementwise rest
  (cheaper than writing and reading back every [b, hidden] activation). In groups, only
  each group's entering state and every chunk's GROUP_SAVED are kept; the backward pass
  replays the group's forward from there.
  """
  step = jax.vmap(jax.vmap(lambda c, x: _chunk_step(config, transposed, c, x)))
  if config.remat_chunks != 0:
    policy = jax.checkpoint_policies.save_only_these_names(
        *(f"titans_memory.{name}" for name in SAVED_FOR_BACKWARD))
    step = jax.checkpoint(step, prevent_cse=False, policy=policy)
  if group == 0:
    carry, outputs = jax.lax.scan(step, carry, chunks)
    return carry[:3], outputs
  num_chunks = jax.tree.leaves(chunks)[0].shape[0]
  grouped = jax.tree.map(lambda a: a.reshape((num_chunks // group, group) + a.shape[1:]), chunks)

  group_policy = jax.checkpoint_policies.save_only_these_names(
      *(f"titans_memory.{name}" for name in GROUP_SAVED))

  @functools.partial(jax.checkpoint, policy=group_policy)
  def run_group(carry, group_chunks):
    return jax.lax.scan(step, carry, group_chunks)

  carry, outputs = jax.lax.scan(run_group, carry, grouped)
  return carry[:3], outputs.reshape((num_chunks,) + outputs.shape[2:])


# ----------------------------------------------------------------------------
# Public op
# ----------------------------------------------------------------------------


def _place(x, length, offset, fill, static):
  """Put x [B, H, T, ...] at [offset, offset + T) of a length-`length` time axis."""
  if static:
    pad = [(0, 0)] * x.ndim
    pad[2] = (offset, length - offset - x.shape[2])
    return jnp.pad(x, pad, constant_values=fill)
  out = jnp.full(x.shape[:2] + (length,) + x.shape[3:], fill, x.dtype)
  return jax.lax.dynamic_update_slice_in_dim(out, x, offset, axis=2)


def _to_chunks(x, num_chunks, chunk):
  """[B, H, n*b, ...] -> [n, B, H, b, ...] (chunk axis leading for the scan)."""
  x = x.reshape(x.shape[:2] + (num_chunks, chunk) + x.shape[3:])
  return jnp.moveaxis(x, 2, 0)


def memory_apply(config: MemoryConfig, state: MemoryState, q, k, v, theta, eta, alpha, *,
                 chunk_offset: int | None = None, resets=None,
                 reset_state: MemoryState | None = None):
  """Runs the memory over T tokens, chunk-parallel.

  Args:
    config: static options (MemoryConfig).
    state: MemoryState with weights/momentum/chunk_start [B, H, d_{l-1}, d_l].
    q, k: [B, H, T, d_in]; v: [B, H, T, d_out]; theta, eta, alpha: [B, H, T].
    chunk_offset: state.position % chunk_size when the caller knows it statically
      (e.g. a scan over segments whose length is a multiple of chunk_size) while
      the position itself is traced; saves the extra chunk of the dynamic path.
    resets: [B, T] bool, True at the first token of a document (packed sequences),
      with reset_state: the state each document starts from (weights, momentum and
      chunk-start weights; its position is not used: the chunk grid stays that of
      the stream). A document that starts on a chunk boundary gets exactly the
      outputs it would get alone from reset_state at that alignment.
  Returns:
    y [B, H, T, d_out] in q's dtype, and the new MemoryState (float32 or float64).
  """
  validate_inputs(config, state, q, k, v, theta, eta, alpha)
  validate_resets(config, state, q, resets, reset_state)
  b = config.chunk_size
  if chunk_offset is not None:
    if not (is_int(chunk_offset) and 0 <= chunk_offset < b):
      raise ValueError(f"chunk_offset must be an int in [0, chunk_size={b}), got {chunk_offset!r}")
    chunk_offset = int(chunk_offset)  # a NumPy int too: one static jit key per offset
  elif is_static_position(state.position):
    chunk_offset = int(state.position) % b
  arrays = state._replace(position=jnp.asarray(state.position, jnp.int32))
  reset_to = None if reset_state is None else (reset_state.weights, reset_state.momentum,
                                               reset_state.chunk_start)
  y, new_state = _memory_apply_jit(config, chunk_offset, arrays, q, k, v, theta, eta, alpha,
                                   resets, reset_to)
  # A static position stays a Python int, so the next call is aligned statically too.
  return y, new_state._replace(position=state.position + q.shape[2])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _memory_apply_jit(config, chunk_offset, state, q, k, v, theta, eta, alpha, resets, reset_to):
  dtype = state_dtype(state.weights[0].dtype)
  b = config.chunk_size
  length = q.shape[2]
  static = chunk_offset is not None
  if static:
    offset = chunk_offset
    num_chunks = -(-(offset + length) // b)
  else:  # alignment known only at run time: room for any offset
    offset = state.position % b
    num_chunks = -(-(length + b - 1) // b)
  # Remat groups need a whole number of groups: more chunks of identity tokens.
  itemsize = jnp.dtype(dtype).itemsize
  weights_bytes = sum(w.size for w in state.weights) * itemsize
  saved_states = 3 if reset_to is None else 6  # (W, S, W_grad), and the reset state's
  dims = [state.weights[0].shape[2]] + [w.shape[3] for w in state.weights]
  rows_heads = state.weights[0].shape[0] * state.weights[0].shape[1]
  entry_bytes = saved_states * weights_bytes  # what a chunk or a group keeps of its state
  chunk_bytes = entry_bytes + rows_heads * residual_bytes_per_chunk(config, dims, itemsize)
  group = remat_group_size(config, num_chunks, chunk_bytes, entry_bytes)
  if group:
    num_chunks = -(-num_chunks // group) * group
  padded = num_chunks * b

  # Stage 1: pad to whole chunks with tokens that change nothing.
  place = lambda x, fill: _place(x.astype(dtype), padded, offset, fill, static)
  valid = place(jnp.ones(theta.shape, dtype), 0.0)
  theta_p, eta_p, alpha_p = place(theta, 0.0), place(eta, 1.0), place(alpha, 0.0)
  gates = jnp.stack([theta_p, eta_p, alpha_p], axis=-1)  # [B, H, n*b, 3]
  gates = gates.reshape(gates.shape[:2] + (num_chunks, b, 3))
  # The gates of each chunk's first token (from the state when the call starts mid-chunk).
  first = gates[:, :, :, 0, :]
  starts_mid_chunk = offset > 0
  first = first.at[:, :, 0, :].set(
      jnp.where(starts_mid_chunk, state.chunk_gates.astype(dtype), first[:, :, 0, :]))
  last_chunk = (offset + length - 1) // b
  chunk_gates = jax.lax.dynamic_index_in_dim(first, last_chunk, axis=2, keepdims=False)
  if config.gate_mode == "chunk":
    gates = jnp.broadcast_to(first[:, :, :, None, :], gates.shape)
  gates = gates.reshape(gates.shape[:2] + (padded, 3))
  theta_p, eta_p, alpha_p = gates[..., 0], gates[..., 1], gates[..., 2]
  if not config.momentum:
    eta_p = jnp.zeros_like(eta_p)
  if not config.forgetting:
    alpha_p = jnp.zeros_like(alpha_p)
  is_real = valid > 0
  theta_p = jnp.where(is_real, theta_p, 0.0)
  eta_p = jnp.where(is_real, eta_p, 1.0)
  alpha_p = jnp.where(is_real, alpha_p, 0.0)

  # Stage 2: per-token log gates, chunked with the chunk axis leading.
  chunked = lambda x: _to_chunks(x, num_chunks, b)
  completes = chunked(valid)[:, :, :, b - 1]  # [n, B, H]: the call covers the chunk's end
  gate_terms = [chunked(theta_p), chunked(safe_log(eta_p)), chunked(safe_log(1.0 - alpha_p)),
                chunked(valid)]
  if resets is not None:  # padding never starts a document
    resets = jnp.broadcast_to(resets[:, None, :], theta.shape)
    gate_terms.append(chunked(place(resets.astype(dtype), 0.0)) > 0)
  else:  # the reads' per-token factors, for all chunks before the scan
    gate_terms += [None, read_factors(*gate_terms[1:4])]
  chunks = (chunked(place(q, 0.0)), chunked(place(k, 0.0)), chunked(place(v, 0.0)),
            tuple(gate_terms), completes)

  # Stage 3: the chunk-to-chunk recurrence.
  transposed = stored_transposed(state.weights)
  layout = lambda ws: _to_layout(tuple(w.astype(dtype) for w in ws), transposed)
  weights, momentum = layout(state.weights), layout(state.momentum)
  chunk_start = layout(state.chunk_start)
  # At a chunk boundary the gradients are taken at the running weights (spec loop).
  w_grad = jax.tree.map(lambda c, w: jnp.where(starts_mid_chunk, c, w), chunk_start, weights)
  # A call that starts on a chunk boundary and ends on one (statically) has W_grad = W_run at
  # every chunk start (padding chunks change nothing): the carry drops it, saving a state-sized
  # copy, save and select per chunk each way. Otherwise W_grad is carried.
  fresh_chunks = static and offset == 0 and length % b == 0 and reset_to is None
  carry = (weights, momentum, None if fresh_chunks else w_grad)
  if reset_to is not None:
    carry += (tuple(layout(ws) for ws in reset_to),)
  carry = vary_like(carry, chunks)  # under shard_map: the carry varies as the inputs do
  (w_end, s_end, w_grad_end), y = _scan_chunks(config, transposed, carry, chunks, group)
  if w_grad_end is None:  # the call ends on a chunk boundary: the next chunk starts at W_end
    w_grad_end = w_end
  w_end, s_end, w_grad_end = (_to_layout(ws, transposed) for ws in (w_end, s_end, w_grad_end))

  # Stage 4: back to [B, H, T, d_out].
  y = jnp.moveaxis(y, 0, 2).reshape(y.shape[1:3] + (padded, y.shape[-1]))
  y = jax.lax.dynamic_slice_in_dim(y, offset, length, axis=2)
  new_state = MemoryState(w_end, s_end, w_grad_end, chunk_gates, state.position + length)
  return y.astype(q.dtype), new_state


def memory_read(config: MemoryConfig, state: MemoryState, q):
  """M(q; W) with the state's current weights, no write: MAC's h = M*_{t-1}(q) (Eq. 21).

  q: [B, H, T, d_in] -> [B, H, T, d_out] in q's dtype.
  """
  if q.ndim != 4 or q.shape[:2] != state.weights[0].shape[:2] or q.shape[3] != state.weights[0].shape[2]:
    raise ValueError(f"q has shape {tuple(q.shape)}; expected [B, H, T, d_in] with [B, H] = "
                     f"{tuple(state.weights[0].shape[:2])} and d_in = {state.weights[0].shape[2]}")
  if not jnp.issubdtype(q.dtype, jnp.floating):
    raise ValueError(f"q has dtype {q.dtype}; expected a floating dtype")
  activation = get_activation(config.activation)
  dtype = state_dtype(state.weights[0].dtype)
  read = jax.vmap(jax.vmap(lambda w, x: _mlp_forward(w, x, activation, config.residual)))
  return read(tuple(w.astype(dtype) for w in state.weights), q.astype(dtype)).astype(q.dtype)
