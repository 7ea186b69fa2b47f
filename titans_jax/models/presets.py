"""Named configurations: paper sizes (spec section 4) and baselines that are LMM settings.

Width and heads follow MIRAS (same authors): 170M = 768, 340M = 1024, 760M = 1536,
16 heads; 400M (the Table 5 ablation size) is ours: 1152. MIRAS's layer counts (12 /
24 / 24) fit a Transformer; a Titans layer holds a memory block besides its mixer, so
at a fixed count its MLP would shrink to nothing. So, per variant: the layer count is
the one that reaches the size with Llama's MLP (8/3 x width), then the MLP width is
tuned (multiple of 64) to land on the size. Llama-2 32K vocabulary, untied head.
"""

from __future__ import annotations

import dataclasses

from titans_jax.models.config import ModelConfig

SIZES = {
    "170M": dict(width=768, num_heads=16),
    "340M": dict(width=1024, num_heads=16),
    "400M": dict(width=1152, num_heads=16),
    "760M": dict(width=1536, num_heads=16),
}
TARGETS = {"170M": 170e6, "340M": 340e6, "400M": 400e6, "760M": 760e6}
PAPER_VOCAB = 32000

# TTT-style: a linear memory learned by mini-batch gradient descent, no momentum or decay.
# DeltaNet-style: the same memory updated token by token (chunk 1), i.e. the delta rule.
BASELINES = {
    "ttt": dict(variant="lmm", memory_depth=1, memory_momentum=False, memory_forgetting=False,
                memory_chunk=16, num_persistent=0),
    "deltanet": dict(variant="lmm", memory_depth=1, memory_momentum=False, memory_forgetting=False,
                     memory_chunk=1, num_persistent=0),
}


def _count(config: ModelConfig) -> int:
  import jax
  from flax import nnx

  from titans_jax.models.lm import build_model

  abstract = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))))


def count_parameters(config: ModelConfig) -> int:
  """Exact parameter count from shapes only; layers are identical, so a 1- and a
  2-layer model give it for any depth (fast even at 760M)."""
  one = _count(dataclasses.replace(config, num_layers=1))
  if config.num_layers == 1:
    return one
  two = _count(dataclasses.replace(config, num_layers=2))
  return one + (config.num_layers - 1) * (two - one)


def solve_depth_and_mlp(config: ModelConfig, target: float, multiple: int = 64) -> ModelConfig:
  """Layers, then MLP width, that bring the count to `target` (count = base + L (a + b h))."""
  llama = dataclasses.replace(config, mlp_hidden=0).hidden
  c11 = _count(dataclasses.replace(config, num_layers=1, mlp_hidden=multiple))
  c21 = _count(dataclasses.replace(config, num_layers=2, mlp_hidden=multiple))
  c12 = _count(dataclasses.replace(config, num_layers=1, mlp_hidden=2 * multiple))
  per_unit = (c12 - c11) / multiple  # b
  per_layer_fixed = (c21 - c11) - per_unit * multiple  # a
  base = c11 - per_layer_fixed - per_unit * multiple
  layers = max(1, round((target - base) / (per_layer_fixed + per_unit * llama)))
  hidden = (target - base - layers * per_layer_fixed) / (layers * per_unit)
  hidden = max(multiple, int(round(hidden / multiple)) * multiple)
  return dataclasses.replace(config, num_layers=layers, mlp_hidden=hidden)


def model_config(size: str | None = None, variant: str = "mac", **overrides) -> ModelConfig:
  """ModelConfig of a paper size and/or a baseline name ('ttt', 'deltanet'), then overrides.

  With a size, num_layers and mlp_hidden are solved for the size's parameter count
  unless given in overrides.
  """
  fields = {}
  if variant in BASELINES:
    fields.update(BASELINES[variant])
  else:
    fields["variant"] = variant
  if size is not None:
    if size not in SIZES:
      raise ValueError(f"size={size!r} is unknown; expected one of {tuple(SIZES)}")
    fields.update(SIZES[size], vocab_size=PAPER_VOCAB)
  fields.update(overrides)
  config = ModelConfig(**fields)
  if size is not None and not {"num_layers", "mlp_hidden"} & set(overrides):
    config = solve_depth_and_mlp(config, TARGETS[size])
  return config
