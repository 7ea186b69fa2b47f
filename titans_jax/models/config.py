"""ModelConfig: every choice of a zoo model, validated before anything is traced.

Where the paper is silent (spec `titans.md`), the choice is a field here with a
comment saying why its default was picked.
"""

from __future__ import annotations

import dataclasses

from titans_jax.ops import MemoryConfig
from titans_jax.ops.activations import ACTIVATIONS

# transformer: Transformer++ (full causal attention); swa: sliding-window only;
# lmm: memory only; mac / mag / mal: the three Titans (paper section 4).
VARIANTS = ("transformer", "swa", "lmm", "mac", "mag", "mal")
MEMORY_VARIANTS = ("lmm", "mac", "mag", "mal")
DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Attributes (grouped as the model is):

  Model: variant, vocab_size (token ids in, logits out), input_dim (> 0: continuous
    inputs [B, T, input_dim] instead of ids), output_dim (> 0: a regression head of
    this width instead of logits), width, num_layers, num_heads, mlp_hidden (0 = the
    Llama rule 8/3 x width rounded up to 64), dtype (compute; parameters stay
    param_dtype), tie_embeddings.
  Attention: window (SWA, MAG, MAL), segment_len (MAC), num_persistent (paper Eq. 19),
    rope_base.
  Memory (LMM block, spec section 2): memory_enabled (False turns MAG / MAL into their
    attention baselines), memory_depth, memory_expansion, memory_activation,
    memory_chunk, memory_momentum, memory_forgetting, memory_gate_mode, memory_remat
    (-1 auto, 0 off, n chunks per group), use_conv, conv_kernel, theta_max and the gate
    bias initialisations.
  """

  variant: str = "mac"
  vocab_size: int = 256
  input_dim: int = 0
  output_dim: int = 0
  width: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_hidden: int = 0
  dtype: str = "float32"
  param_dtype: str = "float32"
  tie_embeddings: bool = False
  init_std: float = 0.02
  norm_eps: float = 1e-6

  window: int = 64
  segment_len: int = 64
  # Paper gives no N_p; 4 per spec section 1 (0 disables: the Table 5 ablation). Queries
  # score the persistent keys without RoPE: they have no place in the sequence, so how
  # much a query reads them does not depend on where it is (and stays as trained at
  # lengths never trained on).
  num_persistent: int = 4
  rope_base: float = 10000.0

  memory_enabled: bool = True
  memory_depth: int = 2
  memory_expansion: float = 4.0
  memory_activation: str = "silu"
  # 16 tokens per mini-batch: TTT's choice; a divisor of the default window/segment.
  memory_chunk: int = 16
  memory_momentum: bool = True
  memory_forgetting: bool = True
  memory_gate_mode: str = "token"
  memory_remat: int = -1
  use_conv: bool = True
  conv_kernel: int = 4
  # theta_t = theta_max * sigmoid(.). A chunk's gradients are summed at one point (spec),
  # so b nearly equal keys (repetitive text) act as one step of b x theta; the linear
  # memory stays stable while that is < 1. 0 = auto: 1 / memory_chunk.
  theta_max: float = 0.0
  # theta_t also x (1 - eta_t) when momentum is on: inside a chunk the momentum (Eq. 10)
  # re-applies each gradient up to 1 / (1 - eta) times with no feedback, so without this
  # factor a learned eta -> 1 pushes the step past the bound above and the memory
  # diverges on long inputs (seen: weights ~1e19 after ~500 tokens of a repetitive
  # haystack). Still a data-dependent theta_t, as the paper has it.
  theta_momentum_scaled: bool = True
  # Initial gates: theta ~ 0.12 theta_max, eta ~ 0.5, alpha ~ 0.02: a modest step, short
  # momentum and slow forgetting train stably from the first step.
  theta_bias_init: float = -2.0
  eta_bias_init: float = 0.0
  alpha_bias_init: float = -4.0

  def __post_init__(self):
    validate(self)

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def hidden(self) -> int:
    if self.mlp_hidden:
      return self.mlp_hidden
    return -(-int(8 * self.width / 3) // 64) * 64

  @property
  def theta_scale(self) -> float:
    return self.theta_max or 1.0 / self.memory_chunk

  @property
  def has_memory(self) -> bool:
    return self.variant in MEMORY_VARIANTS and (self.memory_enabled or self.variant in ("lmm", "mac"))

  @property
  def model_prefix(self) -> bool:
    """LMM and MAL prepend the persistent tokens to the whole stack (x~ = [p || x],
    Eqs. 19 and 29); MAC and MAG hold them in each layer's attention (Eqs. 22, 26)."""
    return self.variant in ("lmm", "mal") and self.num_persistent > 0 and self.has_memory

  def memory_config(self, retrieval: str = "token") -> MemoryConfig:
    return MemoryConfig(
        depth=self.memory_depth, expansion=self.memory_expansion,
        activation=self.memory_activation, chunk_size=self.memory_chunk, retrieval=retrieval,
        momentum=self.memory_momentum, forgetting=self.memory_forgetting,
        gate_mode=self.memory_gate_mode,
        remat_chunks=None if self.memory_remat < 0 else self.memory_remat)

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def validate(config: ModelConfig) -> None:
  """Every check runs on plain values, before any array is built."""
  c = config
  _require(c.variant in VARIANTS, f"model.variant={c.variant!r} is unknown; expected one of "
           f"{VARIANTS} (TTT- and DeltaNet-style memories are presets of 'lmm': see "
           "titans_jax.models.presets)")
  for name in ("width", "num_layers", "num_heads"):
    _require(isinstance(getattr(c, name), int) and getattr(c, name) >= 1,
             f"model.{name}={getattr(c, name)!r} must be an int >= 1")
  _require(c.width % c.num_heads == 0,
           f"model.width={c.width} is not divisible by model.num_heads={c.num_heads}; expected a "
           f"head count that divides the width (e.g. {_divisors_hint(c.width)})")
  _require(c.head_dim % 2 == 0 or c.variant in ("lmm",),
           f"model.width / model.num_heads = {c.head_dim} must be even for RoPE")
  _require(c.input_dim >= 0 and c.output_dim >= 0,
           f"model.input_dim={c.input_dim} and model.output_dim={c.output_dim} must be >= 0")
  _require(c.input_dim > 0 or c.vocab_size >= 2,
           f"model.vocab_size={c.vocab_size} must be >= 2 for token inputs (or set model.input_dim)")
  _require(c.mlp_hidden >= 0, f"model.mlp_hidden={c.mlp_hidden} must be >= 0 (0 = 8/3 x width)")
  for name in ("dtype", "param_dtype"):
    _require(getattr(c, name) in DTYPES, f"model.{name}={getattr(c, name)!r}; expected one of {DTYPES}")
  _require(c.window >= 1, f"model.window={c.window} must be >= 1 (a window larger than the "
           "sequence is fine)")
  _require(c.segment_len >= 1, f"model.segment_len={c.segment_len} must be >= 1")
  _require(c.num_persistent >= 0, f"model.num_persistent={c.num_persistent} must be >= 0")
  _require(c.rope_base > 0, f"model.rope_base={c.rope_base} must be > 0")
  _require(c.memory_activation in ACTIVATIONS, f"model.memory_activation={c.memory_activation!r}; "
           f"expected one of {tuple(ACTIVATIONS)}")
  _require(c.conv_kernel >= 1, f"model.conv_kernel={c.conv_kernel} must be >= 1")
  _require(c.theta_max >= 0, f"model.theta_max={c.theta_max} must be >= 0 (0 = 1 / memory_chunk)")
  _require(c.memory_remat >= -1, f"model.memory_remat={c.memory_remat} must be -1 (auto), 0 (off) "
           "or a number of chunks")
  try:
    c.memory_config()
  except ValueError as error:
    raise ValueError(f"model.memory_* fields: {error}") from None
  if c.variant in MEMORY_VARIANTS and c.memory_depth > 1:
    _require(c.memory_expansion * c.head_dim >= 1,
             f"model.memory_expansion={c.memory_expansion} x head dim {c.head_dim} gives no hidden "
             "unit; expected memory_expansion * width / num_heads >= 1")


def _divisors_hint(width: int) -> str:
  return ", ".join(str(d) for d in range(1, min(width, 64) + 1) if width % d == 0 and d > 1)
