"""Configuration, state and input validation of the neural long-term memory.

Shape letters used across the memory ops:
  B batch rows, H heads, T tokens in this call, b chunk size, n chunks,
  d_in / d_out key and value widths, L memory depth (layers).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from titans_jax.ops.activations import ACTIVATIONS

RETRIEVAL_MODES = ("token", "chunk")
GATE_MODES = ("token", "chunk")


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
  """Static options of the memory recurrence (`shared/spec/memory.md`).

  Attributes:
    depth: number of layers L of the memory MLP (1 = linear matrix memory).
    expansion: hidden width = round(expansion * d_in); used when building W_0.
    activation: non-linearity between layers ("silu", "gelu", "identity", ...).
    residual: add the input to the memory's output (needs d_in == d_out).
    chunk_size: b, tokens whose gradients share the chunk-start weights.
      1 is the exact online rule of the paper (Eqs. 13-14).
    retrieval: "token" reads the weights that include token t; "chunk" reads
      the weights as they were at the start of t's chunk (MAC's M*_{t-1}).
    momentum: False forces eta = 0 (no past surprise, Eq. 10 without S).
    forgetting: False forces alpha = 0 (no weight decay, Eq. 13).
    gate_mode: "token" uses every token's gates; "chunk" holds the gates of a
      chunk's first token for the whole chunk (paper 3.2, "parameters as
      functions of chunks"). The first token rather than a chunk mean keeps
      the op causal and streamable.
    remat_chunks: the backward pass recomputes each chunk from the state entering
      it. None (auto) keeps that state for every chunk, or, past
      `memory.AUTO_GROUP_BYTES` of kept states, one per group of chunks sized for the
      least memory (`memory.remat_group_size`, ~sqrt(num_chunks)); a positive int sets
      the group size; 0 disables rematerialisation
      (every chunk's activations are kept: more memory, and slower on CPU).
  """

  depth: int = 2
  expansion: float = 4.0
  activation: str = "silu"
  residual: bool = False
  chunk_size: int = 64
  retrieval: str = "token"
  momentum: bool = True
  forgetting: bool = True
  gate_mode: str = "token"
  remat_chunks: int | None = None

  def __post_init__(self):
    validate_config(self)

  def hidden_dim(self, d_in: int) -> int:
    return max(int(round(self.expansion * d_in)), 0)


class MemoryState(NamedTuple):
  """The recurrent state, one memory per (batch row, head).

  weights / momentum / chunk_start: tuples of L arrays [B, H, d_{l-1}, d_l].
  chunk_start holds the weights at the start of the chunk that contains the
  next position (the point where that chunk's gradients are taken).
  chunk_gates [B, H, 3]: (theta, eta, alpha) of that chunk's first token, used
  by gate_mode="chunk" when a stream is cut inside a chunk.
  position: global stream position of the next token. A Python int keeps
  chunk alignment static (exact padding); an int array works under jit.
  """

  weights: tuple
  momentum: tuple
  chunk_start: tuple
  chunk_gates: Any
  position: Any


def state_dtype(dtype) -> jnp.dtype:
  """State and accumulation dtype: at least float32, float64 when given."""
  return jnp.promote_types(dtype, jnp.float32)


def init_memory_weights(key, *, num_heads: int, d_in: int, d_out: int,
                        config: MemoryConfig, dtype=jnp.float32) -> tuple:
  """Initial weights W_0, one set per head: L arrays [H, d_{l-1}, d_l]."""
  dims = memory_dims(config, d_in, d_out)
  keys = jax.random.split(key, config.depth)
  weights = []
  for layer_key, fan_in, fan_out in zip(keys, dims[:-1], dims[1:]):
    scale = 1.0 / math.sqrt(fan_in)
    weights.append(scale * jax.random.normal(layer_key, (num_heads, fan_in, fan_out), dtype))
  return tuple(weights)


def memory_dims(config: MemoryConfig, d_in: int, d_out: int) -> list[int]:
  """Layer widths [d_in, hidden, ..., d_out] of the memory MLP."""
  if config.depth == 1:
    return [d_in, d_out]
  hidden = config.hidden_dim(d_in)
  if hidden < 1:
    raise ValueError(
        f"expansion={config.expansion} with d_in={d_in} gives hidden width {hidden}; "
        "expected expansion * d_in >= 1 for a memory of depth >= 2")
  return [d_in] + [hidden] * (config.depth - 1) + [d_out]


def init_memory_state(initial_weights: Sequence, batch_size: int,
                      position: int = 0) -> MemoryState:
  """Fresh state: W = W_0 broadcast over the batch, momentum S = 0."""
  if not is_int(batch_size) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  if len(initial_weights) < 1:
    raise ValueError("initial_weights must hold at least one layer [H, d_in, d_out]")
  weights = []
  for index, w in enumerate(initial_weights):
    if w.ndim != 3:
      raise ValueError(
          f"initial_weights[{index}] has shape {tuple(w.shape)}; expected [H, d_in, d_out]")
    dtype = state_dtype(w.dtype)
    weights.append(jnp.broadcast_to(w.astype(dtype), (batch_size,) + tuple(w.shape)))
  weights = tuple(weights)
  momentum = tuple(jnp.zeros_like(w) for w in weights)
  heads = weights[0].shape[1]
  gates = jnp.zeros((batch_size, heads, 3), weights[0].dtype)
  return MemoryState(weights, momentum, weights, gates, position)


# ----------------------------------------------------------------------------
# Validation: everything here runs on shapes and dtypes only, before tracing.
# ----------------------------------------------------------------------------


def is_int(x) -> bool:
  """A Python or NumPy int, not a bool (True would pass as 1)."""
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def validate_config(config: MemoryConfig) -> None:
  if not is_int(config.depth) or config.depth < 1:
    raise ValueError(f"depth must be an int >= 1 (1 = linear memory), got {config.depth!r}")
  if not is_int(config.chunk_size) or config.chunk_size < 1:
    raise ValueError(f"chunk_size must be an int >= 1, got {config.chunk_size!r}")
  if not (isinstance(config.expansion, (int, float)) and not isinstance(config.expansion, bool)
          and config.expansion > 0):
    raise ValueError(f"expansion must be a number > 0, got {config.expansion!r}")
  if config.activation not in ACTIVATIONS:
    raise ValueError(
        f"activation={config.activation!r} is unknown; expected one of {sorted(ACTIVATIONS)}")
  if config.retrieval not in RETRIEVAL_MODES:
    raise ValueError(f"retrieval={config.retrieval!r}; expected one of {RETRIEVAL_MODES}")
  if config.gate_mode not in GATE_MODES:
    raise ValueError(f"gate_mode={config.gate_mode!r}; expected one of {GATE_MODES}")
  if config.remat_chunks is not None and (
      not is_int(config.remat_chunks) or config.remat_chunks < 0):
    raise ValueError(
        f"remat_chunks must be None (auto), 0 (off) or a positive int, got {config.remat_chunks!r}")


def _require_float(name: str, x) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} has dtype {x.dtype}; expected a floating dtype "
                     "(float32, bfloat16 or float64)")


def validate_inputs(config: MemoryConfig, state: MemoryState, q, k, v, theta, eta,
                    alpha) -> None:
  """Raises ValueError naming the argument and the expected value."""
  validate_config(config)
  for name, x in (("q", q), ("k", k), ("v", v), ("theta", theta), ("eta", eta),
                  ("alpha", alpha)):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
      raise ValueError(f"{name} must be an array, got {type(x).__name__}")
    _require_float(name, x)
  if q.ndim != 4:
    raise ValueError(f"q has shape {tuple(q.shape)}; expected [B, H, T, d_in]")
  batch, heads, length, d_in = q.shape
  if length < 1:
    raise ValueError("q has T = 0 tokens; expected at least one token")
  if k.shape != q.shape:
    raise ValueError(f"k has shape {tuple(k.shape)}; expected the shape of q {tuple(q.shape)}")
  if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
    raise ValueError(
        f"v has shape {tuple(v.shape)}; expected [B, H, T, d_out] = [{batch}, {heads}, {length}, d_out]")
  d_out = v.shape[3]
  for name, gate in (("theta", theta), ("eta", eta), ("alpha", alpha)):
    if gate.shape != (batch, heads, length):
      raise ValueError(
          f"{name} has shape {tuple(gate.shape)}; expected [B, H, T] = {(batch, heads, length)}")
  if config.residual and d_in != d_out:
    raise ValueError(f"residual=True needs d_in == d_out; got d_in={d_in}, d_out={d_out}")
  _validate_state(config, state, batch, heads, d_in, d_out)
  _validate_gate_values(theta=theta, eta=eta, alpha=alpha)


# The gates' domain (spec: theta >= 0, eta and alpha in [0, 1]). The fast path's products
# are taken in log space: a negative eta or 1 - alpha has no log there (NaN, `safe_log`),
# where the token loop would multiply by it.
_GATE_RANGES = {"theta": (0.0, math.inf), "eta": (0.0, 1.0), "alpha": (0.0, 1.0)}


def _validate_gate_values(**gates) -> None:
  """Gates in their domain, checked when the values are known here (eager calls); under
  jit, vmap or grad they are traced and only shapes are checked. NaN is not checked: like
  any NaN input it propagates to the outputs (a model whose memory diverged stays
  traceable, `evaluation.traces`)."""
  if any(isinstance(x, jax.core.Tracer) for x in gates.values()):
    return
  for name, x in gates.items():
    # On the host: concrete gates can also be constants of an enclosing trace. float64
    # holds every gate dtype exactly (a float32 cast would turn -1e-300 into -0.0).
    values = np.asarray(x, np.float64)
    if values.size == 0:
      continue
    low, high = np.fmin.reduce(values, axis=None), np.fmax.reduce(values, axis=None)  # NaN skipped
    lower, upper = _GATE_RANGES[name]
    if low < lower or high > upper:  # False for an all-NaN gate
      raise ValueError(f"{name} has values in [{float(low):.6g}, {float(high):.6g}]; expected "
                       f"values in [{lower:g}, {upper:g}] ({name} is a gate: spec/memory.md)")


def validate_resets(config: MemoryConfig, state: MemoryState, q, resets, reset_state) -> None:
  """resets [B, T] bool and reset_state (a state of the same shapes) come together."""
  if resets is None and reset_state is None:
    return
  if resets is None or reset_state is None:
    raise ValueError("resets and reset_state go together: pass both (document starts [B, T] "
                     "and the state a document starts from) or neither")
  batch, heads, length, d_in = q.shape
  if not hasattr(resets, "shape") or tuple(resets.shape) != (batch, length) or resets.dtype != bool:
    raise ValueError(f"resets has shape {tuple(getattr(resets, 'shape', ()))} and dtype "
                     f"{getattr(resets, 'dtype', type(resets).__name__)}; expected bool [B, T] = "
                     f"{(batch, length)}")
  if config.gate_mode != "token":
    raise ValueError("resets need gate_mode='token' (a chunk-constant gate has no meaning for a "
                     "document that starts inside the chunk)")
  _validate_state(config, reset_state, batch, heads, d_in, state.weights[-1].shape[3])


def _validate_state(config, state, batch, heads, d_in, d_out) -> None:
  if not isinstance(state, MemoryState):
    raise ValueError(f"state must be a MemoryState, got {type(state).__name__}")
  if len(state.weights) != config.depth:
    raise ValueError(
        f"state.weights has {len(state.weights)} layers; expected depth={config.depth}")
  expected_in = d_in
  for index, w in enumerate(state.weights):
    _require_float(f"state.weights[{index}]", w)
    if w.ndim != 4 or w.shape[:3] != (batch, heads, expected_in):
      raise ValueError(
          f"state.weights[{index}] has shape {tuple(w.shape)}; expected "
          f"[B, H, d_in_layer, d_out_layer] with [B, H, d_in_layer] = {(batch, heads, expected_in)}")
    expected_in = w.shape[3]
  if expected_in != d_out:
    raise ValueError(
        f"the last memory layer outputs {expected_in} features; expected d_out={d_out} (v's width)")
  for field in ("momentum", "chunk_start"):
    arrays = getattr(state, field)
    if len(arrays) != len(state.weights):
      raise ValueError(f"state.{field} has {len(arrays)} layers; expected {len(state.weights)}")
    for index, (a, w) in enumerate(zip(arrays, state.weights)):
      if a.shape != w.shape:
        raise ValueError(
            f"state.{field}[{index}] has shape {tuple(a.shape)}; expected {tuple(w.shape)}")
  if tuple(state.chunk_gates.shape) != (batch, heads, 3):
    raise ValueError(
        f"state.chunk_gates has shape {tuple(state.chunk_gates.shape)}; expected {(batch, heads, 3)}")
  position = state.position
  if is_int(position):
    if position < 0:
      raise ValueError(f"state.position must be >= 0, got {position}")
  elif not (hasattr(position, "dtype") and jnp.issubdtype(position.dtype, jnp.integer)
            and position.ndim == 0):
    raise ValueError(f"state.position must be an int or an integer scalar array, got {position!r}")


def is_static_position(position) -> bool:
  return is_int(position)


def _varying_axes(x) -> frozenset:
  """The manual mesh axes x varies over (newer jax: manual_axis_type.varying; older: vma)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, "vma", ()))


def vary_like(tree, *inputs):
  """Marks every array of `tree` as varying over the manual mesh axes that `inputs` vary
  over (inside `jax.shard_map`): a scan carry built from replicated initial weights must
  have the type of the per-shard state it becomes, or `lax.scan` refuses it. Outside
  shard_map (no manual axes) it returns `tree` unchanged."""
  if hasattr(jax.lax, "pcast"):
    cast = lambda a, axes: jax.lax.pcast(a, axes, to="varying")
  elif hasattr(jax.lax, "pvary"):  # the older name
    cast = jax.lax.pvary
  else:  # a jax without varying-axis types
    return tree
  if not hasattr(jax, "typeof"):
    return tree
  axes = frozenset().union(*(_varying_axes(x) for x in jax.tree.leaves(inputs)))
  if not axes:
    return tree

  def vary(a):
    missing = tuple(sorted(axes - _varying_axes(a)))
    return cast(a, missing) if missing else a

  return jax.tree.map(vary, tree)
