"""A small NNX language model with logical axis names, for training-system tests."""

import jax
from flax import nnx

from titans_jax import configs


class TinyLM(nnx.Module):

  def __init__(self, vocab_size, width, rngs):
    init = nnx.initializers.normal(0.02)
    self.embed = nnx.Embed(vocab_size, width, rngs=rngs,
                           embedding_init=nnx.with_partitioning(init, ("vocab", "embed"), eager_sharding=False))
    self.up = nnx.Linear(width, 2 * width, rngs=rngs,
                         kernel_init=nnx.with_partitioning(init, ("embed", "mlp"), eager_sharding=False),
                         bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",), eager_sharding=False))
    self.down = nnx.Linear(2 * width, width, rngs=rngs,
                           kernel_init=nnx.with_partitioning(init, ("mlp", "embed"), eager_sharding=False))
    self.head = nnx.Linear(width, vocab_size, rngs=rngs,
                           kernel_init=nnx.with_partitioning(init, ("embed", "vocab"), eager_sharding=False))

  def __call__(self, tokens):
    x = self.embed(tokens)
    x = x + self.down(jax.nn.gelu(self.up(x)))
    return self.head(x)


def build_tiny(model_config, rngs):
  return TinyLM(model_config.vocab_size, model_config.width, rngs)


def tiny_config(**overrides):
  """A base config around TinyLM: random tokens, a few steps; overrides 'a.b' -> value."""
  config = configs.base_config(model={"vocab_size": 64, "width": 32})
  config.data.seq_len = 16
  config.train.steps = 6
  config.train.global_batch_size = 4
  config.train.log_every = 1
  config.train.eval_every = 3
  config.train.eval_steps = 1
  config.train.checkpoint_every = 3
  config.optimizer.warmup_steps = 2
  config.optimizer.learning_rate = 1e-2
  for key, value in overrides.items():
    if "." not in key:  # a top-level field (e.g. partitioner)
      config[key] = value
      continue
    section, field = key.split(".")
    config[section][field] = value
  return config
