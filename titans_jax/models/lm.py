"""The causal LM around any variant: embeddings (or a projection of continuous
inputs), the stack of layers, final norm, head; one-pass and streaming forward.

    model = build_model(ModelConfig(variant="mac"), nnx.Rngs(0))
    logits = model(tokens)                                # [B, T] ids -> [B, T, vocab]
    cache = model.init_cache(batch_size)                  # streaming: any split, same result
    logits_a, cache = model.stream(tokens[:, :100], cache)
    logits_b, cache = model.stream(tokens[:, 100:], cache)
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from titans_jax.models import layers
from titans_jax.models.attention import Attention
from titans_jax.models.config import ModelConfig
from titans_jax.models.documents import from_segments
from titans_jax.models.memory_block import MemoryBlock
from titans_jax.models.titans import Block, MACMixer, MAGMixer, MALLayer


def build_layer(config: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
  variant = config.variant
  if variant == "transformer":
    return Block(config, Attention(config, rngs, kind="full"), rngs)
  if variant == "swa":
    return Block(config, Attention(config, rngs, kind="window"), rngs)
  if variant == "lmm":
    return Block(config, MemoryBlock(config, rngs), rngs)
  if variant == "mac":
    return Block(config, MACMixer(config, rngs), rngs)
  if variant == "mag":
    if config.has_memory:
      return Block(config, MAGMixer(config, rngs), rngs)
    # Memory off: SWA* alone (the SWA baseline when num_persistent = 0).
    return Block(config, Attention(config, rngs, kind="window", num_persistent=config.num_persistent),
                 rngs)
  if variant == "mal":
    if config.has_memory:
      return MALLayer(config, rngs)
    return Block(config, Attention(config, rngs, kind="window"), rngs)
  raise ValueError(f"model.variant={variant!r} is unknown")


class TitansLM(nnx.Module):
  """Any zoo variant as a causal LM (token ids) or a sequence model of continuous inputs."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.config = config
    compute, param_dtype = layers.dtypes(config)
    width = config.width
    if config.input_dim:
      self.input_proj = layers.dense(config, config.input_dim, width, (None, "embed"), rngs)
    else:
      self.embed = nnx.Embed(config.vocab_size, width, dtype=compute, param_dtype=param_dtype, rngs=rngs,
                             embedding_init=layers.partitioned(nnx.initializers.normal(config.init_std),
                                                               ("vocab", "embed")))
    if config.model_prefix:
      tokens = config.init_std * nnx.initializers.normal(1.0)(rngs.params(),
                                                              (config.num_persistent, width), param_dtype)
      self.persistent = layers.param(tokens, ("kv", "embed"))
    self.layers = nnx.List([build_layer(config, rngs) for _ in range(config.num_layers)])
    self.final_norm = layers.RMSNorm(width, config)
    if not self.tied:
      out = config.output_dim or config.vocab_size
      self.head = layers.dense(config, width, out, ("embed", None if config.output_dim else "vocab"), rngs)

  @property
  def tied(self) -> bool:
    c = self.config
    return c.tie_embeddings and not c.input_dim and not c.output_dim

  # -- inputs -------------------------------------------------------------------------

  def check_inputs(self, inputs) -> None:
    """Shapes and dtypes, before anything is traced."""
    c = self.config
    if c.input_dim:
      if inputs.ndim != 3 or inputs.shape[-1] != c.input_dim or not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise ValueError(f"inputs have shape {tuple(inputs.shape)} and dtype {inputs.dtype}; expected "
                         f"floats [batch, length, input_dim={c.input_dim}]")
    elif inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f"inputs have shape {tuple(inputs.shape)} and dtype {inputs.dtype}; expected "
                       "integer token ids [batch, length] (or set model.input_dim for continuous inputs)")
    if inputs.shape[1] < 1:
      raise ValueError("inputs are empty; expected at least one position")

  def _embed(self, inputs):
    if self.config.input_dim:
      return self.input_proj(inputs.astype(self.config.dtype))
    return self.embed(inputs)

  # -- forward ------------------------------------------------------------------------

  def _stack(self, x, caches, documents=None):
    new_caches = []
    for layer, cache in zip(self.layers, caches):
      x, cache = layer(x, cache, documents)
      new_caches.append(cache)
    return x, new_caches

  def init_cache(self, batch_size: int, max_length: int = 0) -> list:
    """Fresh streaming state; LMM and MAL first read the persistent tokens (Eqs. 19, 29).

    max_length > 0 gives full attention (Transformer++) fixed slots for that many
    positions, so a jitted decoding step compiles once; every other variant's state is
    bounded already (memory weights, windows, MAC's segment) and ignores it."""
    caches = [layer.init_cache(batch_size, max_length) for layer in self.layers]
    if self.config.model_prefix:
      tokens = self.persistent[...].astype(self.config.dtype)
      _, caches = self._stack(jnp.broadcast_to(tokens, (batch_size,) + tokens.shape), caches)
    return caches

  def stream(self, inputs, cache: list):
    """inputs [B, T] (or [B, T, input_dim]) continuing the stream held in `cache`."""
    self.check_inputs(inputs)
    return self._forward(inputs, cache)

  def _forward(self, inputs, cache: list, documents=None):
    x = layers.constrain(self._embed(inputs), layers.BTD)
    x, cache = self._stack(x, cache, documents)
    x = self.final_norm(x)
    out = self.embed.attend(x) if self.tied else self.head(x)
    names = ("activation_batch", "activation_length", None if self.config.output_dim else "activation_vocab")
    return layers.constrain(out.astype(jnp.float32), names), cache

  def __call__(self, inputs, segments=None):
    """One pass from a fresh state. segments [B, T] (document number of each token,
    packed rows): every document is read as if it were alone (models/documents.py)."""
    self.check_inputs(inputs)
    documents = None
    if segments is not None:
      if tuple(segments.shape) != tuple(inputs.shape[:2]):
        raise ValueError(f"segments have shape {tuple(segments.shape)}; expected the inputs' "
                         f"[batch, length] = {tuple(inputs.shape[:2])}")
      documents = from_segments(segments)
    return self._forward(inputs, self.init_cache(inputs.shape[0]), documents)[0]


def build_model(config: ModelConfig, rngs: nnx.Rngs) -> TitansLM:
  return TitansLM(config, rngs)
