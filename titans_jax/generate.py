"""Generation from any zoo model: prompt in, tokens out, with the memory state and the
attention cache carried from token to token.

    from titans_jax import generate
    new_tokens = generate.generate(model, prompt_ids, max_new_tokens=64, temperature=0.8, top_p=0.95)

    python -m titans_jax.generate --workdir=/tmp/titans_quickstart --prompt="What is the pass key?"

The prompt goes through once (prefill); then one token per step through a step that
is compiled once: every variant's state has a fixed size (memory weights and
momentum, windowed key/value caches, MAC's segment buffers), so the cost of a token
stays constant however long the context grows (Transformer++ attends over fixed slots
sized for prompt + new tokens).
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from titans_jax.ops.sampling import sample_next


def _check(model, prompt, max_new_tokens, temperature, top_p, max_length):
  """Arguments, before anything is compiled; returns the prompt as int32 [B, T]."""
  config = model.config
  if config.input_dim or config.output_dim:
    raise ValueError(f"this model reads continuous inputs (input_dim={config.input_dim}) or writes a "
                     f"regression head (output_dim={config.output_dim}); generation needs a token LM "
                     "(input_dim = output_dim = 0)")
  prompt = np.asarray(prompt)
  if prompt.ndim == 1:
    prompt = prompt[None]
  if prompt.ndim != 2 or not (prompt.size == 0 or np.issubdtype(prompt.dtype, np.integer)):
    raise ValueError(f"prompt has shape {prompt.shape} and dtype {prompt.dtype}; expected token ids "
                     "[length] or [batch, length]")
  if prompt.shape[1] == 0 or prompt.shape[0] == 0:
    raise ValueError("the prompt is empty; expected at least one token id to condition on")
  if prompt.min() < 0 or prompt.max() >= config.vocab_size:
    raise ValueError(f"prompt token ids span [{prompt.min()}, {prompt.max()}]; expected ids in "
                     f"[0, {config.vocab_size}) (model.vocab_size)")
  if int(max_new_tokens) < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens}; expected >= 1")
  if not temperature >= 0:
    raise ValueError(f"temperature={temperature}; expected >= 0 (0 = greedy)")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p={top_p}; expected a probability mass in (0, 1]")
  total = prompt.shape[1] + int(max_new_tokens)
  if max_length is not None and total > max_length:
    raise ValueError(f"a prompt of {prompt.shape[1]} tokens plus {max_new_tokens} new tokens is "
                     f"{total} positions, over max_length={max_length}; shorten the prompt, ask for "
                     "fewer tokens, or raise max_length")
  return prompt.astype(np.int32)


class Decoder:
  """A model's prefill and its one-token step, each compiled once (per prompt shape)."""

  def __init__(self, model):
    self.model = model
    self.graphdef, self.state = nnx.split(model)
    graphdef = self.graphdef

    def prefill(state, tokens, cache):
      return nnx.merge(graphdef, state).stream(tokens, cache)

    def step(state, token, cache, key, temperature, top_p):
      logits, cache = nnx.merge(graphdef, state).stream(token[:, None], cache)
      return sample_next(logits[:, -1], key, temperature, top_p), logits[:, -1], cache

    self._prefill = jax.jit(prefill)
    self._step = jax.jit(step, donate_argnums=(2,))

  def init_cache(self, batch_size: int, max_length: int = 0):
    return self.model.init_cache(batch_size, max_length)

  def prefill(self, tokens, cache):
    """Logits [B, T, V] of the prompt and the cache after it."""
    if self.model.config.variant == "mac":
      # MAC's segment bookkeeping needs Python-int positions for pieces longer than one
      # token: the prompt runs eagerly (its memory op is still compiled).
      logits, cache = self.model.stream(jnp.asarray(tokens), cache)
    else:
      logits, cache = self._prefill(self.state, jnp.asarray(tokens), cache)
    # Strongly typed arrays everywhere (Python-int positions included), so the step
    # compiles once for the whole decode.
    return logits, jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), cache)

  def step(self, token, cache, key, temperature: float = 0.0, top_p: float = 1.0):
    """(next token [B], logits of `token`'s position [B, V], cache)."""
    return self._step(self.state, token, cache, key, jnp.float32(temperature), jnp.float32(top_p))


def generate(model, prompt, max_new_tokens: int, *, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0, eos_id: int | None = None, max_length: int | None = None,
             return_logits: bool = False, decoder: Decoder | None = None):
  """New token ids [B, max_new_tokens] (int32; [max_new_tokens] for a 1-D prompt).

  temperature 0 is greedy; otherwise tokens are drawn from softmax(logits / temperature)
  restricted to the top_p nucleus. After eos_id a row repeats eos_id; generation stops
  early when every row has ended. return_logits adds the logits each token was chosen
  from, [B, N, V] float32. A Decoder may be passed to reuse its compiled steps.
  """
  single = np.ndim(prompt) == 1
  prompt = _check(model, prompt, max_new_tokens, temperature, top_p, max_length)
  decoder = decoder or Decoder(model)
  batch, prompt_len = prompt.shape
  # Only full attention needs the length up front (its fixed slots); others ignore it.
  cache = decoder.init_cache(batch, prompt_len + max_new_tokens)
  logits, cache = decoder.prefill(prompt, cache)
  key = jax.random.key(seed)
  key, draw = jax.random.split(key)
  last = jnp.asarray(logits[:, -1], jnp.float32)
  token = sample_next(last, draw, jnp.float32(temperature), jnp.float32(top_p))
  tokens, chosen_from = [token], [last]
  ended = np.zeros((batch,), bool)
  for _ in range(max_new_tokens - 1):
    if eos_id is not None:
      ended |= np.asarray(tokens[-1]) == eos_id
      if ended.all():
        break
    key, draw = jax.random.split(key)
    token, last, cache = decoder.step(tokens[-1], cache, draw, temperature, top_p)
    if eos_id is not None:
      token = jnp.where(jnp.asarray(ended), eos_id, token)
    tokens.append(token)
    chosen_from.append(last)
  out = np.stack([np.asarray(t) for t in tokens], axis=1)
  if eos_id is not None and out.shape[1] < max_new_tokens:
    out = np.pad(out, ((0, 0), (0, max_new_tokens - out.shape[1])), constant_values=eos_id)
  out = out[0] if single else out
  if return_logits:
    stacked = np.stack([np.asarray(row) for row in chosen_from], axis=1)
    return out, (stacked[0] if single else stacked)
  return out


def main(argv=None):
  import argparse

  from titans_jax import train
  from titans_jax.data.tokenizers import load_tokenizer

  parser = argparse.ArgumentParser(description="Generate text from a trained workdir's checkpoint.")
  parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
  parser.add_argument("--prompt", required=True, help="the text to continue")
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tokenizer", default="byte",
                      help="byte | sentencepiece:PATH | hf:PATH (must match the training data)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  args = parser.parse_args(argv)
  if not os.path.isdir(args.workdir):
    parser.error(f"--workdir={args.workdir} does not exist; expected the workdir of a training run")
  tokenizer = load_tokenizer(args.tokenizer)
  model, config, step = train.load_model(args.workdir, args.step)
  if tokenizer.vocab_size > config.model.vocab_size:
    parser.error(f"--tokenizer={args.tokenizer} has {tokenizer.vocab_size} ids but the model has "
                 f"vocab_size={config.model.vocab_size}; pass the tokenizer it was trained with")
  prompt = tokenizer.encode(args.prompt)
  started = time.time()
  tokens = generate(model, prompt, args.max_new_tokens, temperature=args.temperature,
                    top_p=args.top_p, seed=args.seed, eos_id=tokenizer.eos_id)
  seconds = time.time() - started
  print(args.prompt + tokenizer.decode([int(t) for t in tokens]))
  print(f"[{config.model.variant} step {step}: {len(tokens)} tokens in {seconds:.1f}s]", file=sys.stderr)


if __name__ == "__main__":
  main()
