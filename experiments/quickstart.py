"""Quickstart: a tiny Titans (MAG) learns to recall a passkey that its attention
window cannot see, on a laptop CPU; then S-NIAH accuracy at 1x, 4x and 16x the
training length, as a table and a heatmap.

  python -m titans_jax.main --config=experiments/quickstart.py --workdir=/tmp/titans_quickstart
  python -m titans_jax.main --config=experiments/quickstart.py:baseline --workdir=/tmp/titans_quickstart_swa

Arguments (comma-separated after ':'): baseline (the SWA-only Transformer of the same
size and budget), runlocal (a few steps, for tests), steps=N.

Why MAG: its attention is a sliding window, so anything older than `window` tokens
can only come back through the neural memory; and its streaming step has no segment
bookkeeping, so the evaluation streams 16x-long contexts through one compiled step
with memory that does not grow. (MAC is the paper's strongest at S-NIAH, but its
segment attention needs a Python-level segment loop when streamed; see the README.)
"""

from titans_jax import configs


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  baseline = bool(args.get("baseline"))
  model = configs.model_defaults()
  model.update(
      # baseline: the SWA Transformer with the same layers, width and window, no memory.
      variant="swa" if baseline else "mag",
      vocab_size=256,  # byte-level tokens
      width=64,
      num_layers=2,
      num_heads=4,
      # The attention sees 32 tokens: the needle (~60 bytes) is out of its sight at every
      # depth but the last, in a 256-token context.
      window=32,
      num_persistent=4,
      memory_depth=2,
      memory_chunk=16,
      # One larger step size: the needle appears once and must be written in one pass.
      theta_bias_init=-1.0,
  )
  config = configs.base_config(model=model)
  config.data.source = "niah"
  config.data.task = "passkey"
  config.data.haystack = "noise"
  config.data.seq_len = 256
  config.data.needle_depth = -1.0  # a random depth per example

  config.train.steps = int(args.get("steps", 500))
  config.train.global_batch_size = 16
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.eval_steps = 2
  config.train.checkpoint_every = 250
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.weight_decay = 0.01

  config.recall_eval.length_multiples = [1, 4, 16]
  config.recall_eval.samples = 8

  if args.get("runlocal"):
    config.train.steps = min(config.train.steps, 4)
    config.train.log_every = 2
    config.train.eval_every = 0
    config.train.checkpoint_every = 4
    config.recall_eval.length_multiples = [1, 2]
    config.recall_eval.depths = [0.0, 1.0]
    config.recall_eval.samples = 2
  return config
