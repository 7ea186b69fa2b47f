"""BABILong (Titans paper section 5, "B"): a small MAC fine-tuned on BABILong qa1-qa5, then
evaluated at growing context lengths.

Data: RMT-team/babilong-train-5k-samples (fine-tuning) and RMT-team/babilong (test; config =
length, split = task qa1..qa20), each written out as <folder>/<length>/<task>.jsonl
(titans_jax/data/babilong.py) by the BABILong CLI with Hugging Face `datasets`:

  # Fine-tuning data (once; network, pip install datasets):
  python -m titans_jax.evaluation.babilong --fetch_only --hub_dataset=train \\
      --data_dir=/data/babilong-train-5k-samples --lengths=0k,1k --tasks=qa1,qa2,qa3,qa4,qa5
  # Test data, every length of the figure below:
  python -m titans_jax.evaluation.babilong --fetch_only --data_dir=/data/babilong \\
      --lengths=0k,1k,2k,4k,8k,16k,32k,64k,128k,256k,512k,1M --tasks=qa1,qa2,qa3,qa4,qa5
  # TPU pod (every worker runs it; the data folder must be readable on each worker):
  TPU_NAME=my-v5p-8 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh --config=experiments/babilong_mac.py \\
      --workdir=/gcs/BUCKET/titans/babilong_mac --config.data.train_path=/data/babilong-train-5k-samples
  # Local (a few steps on a laptop CPU; the folder may hold just 0k/qa1..qa5.jsonl):
  python -m titans_jax.main --config=experiments/babilong_mac.py:runlocal --workdir=/tmp/babilong_mac \\
      --config.data.train_path=/data/babilong-train-5k-samples
  # Then accuracy per task and length and the qa1-qa5 average, from 0k up:
  python -m titans_jax.evaluation.babilong --workdir=/gcs/BUCKET/titans/babilong_mac \\
      --data_dir=/data/babilong --lengths=0k,1k,2k,4k,8k,16k,32k,64k,128k,256k,512k,1M \\
      --tasks=qa1,qa2,qa3,qa4,qa5 --samples=100

How long a context can be: the MAC's state has a fixed size (memory weights, momentum, a
segment's attention cache; titans_jax/models/lm.py init_cache) and the evaluation streams
the prompt through it in pieces of data.seq_len (evaluation/ruler.py PiecewiseDecoder),
so device memory does not grow with the length; only the host's prompt array does (4 bytes
a token; the hub's length names count subword tokens, ~4 bytes of text each, so a "1M"
prompt is ~4M byte tokens, ~16 MB). Every length the hub publishes
(titans_jax/data/babilong.py HUB_LENGTHS, the paper's figure goes to 10M) therefore fits;
the limit is time, one sequential pass over each prompt. Measured: nothing yet.

Arguments (comma-separated after ':'): runlocal (tiny model, a few steps, for tests),
steps=N.

The paper shows BABILong only as figures and gives no fine-tuning recipe; the choices
here are ours and not yet measured:
- byte tokens and the "plain" prompt ("{input}\\nQuestion: {question}\\nAnswer: {target}."),
  loss on the answer only; evaluation reads the same format from the run's config;
- 0k and 1k samples mixed (1k is ~1K words of PG19 around the facts, ~5K bytes); seq_len
  8192 bytes holds them, and the rare longer one loses its oldest context bytes
  (data.babilong_truncate) rather than stopping the run;
- MAC with segments of 256 bytes: facts further back than a segment reach the answer only
  through the neural memory, as at the evaluation's longer lengths;
- the memory settings experiments/quickstart.py measured for recall on a CPU-sized model
  (linear memory, gates initialised for recall).
"""

from experiments import _lm
from titans_jax import configs

ARGUMENTS = ("steps", "runlocal")


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  _lm.check_arguments(args, ARGUMENTS, "babilong_mac.py")
  model = configs.model_defaults()
  model.update(
      variant="mac",
      vocab_size=256,  # byte-level tokens
      width=256,
      num_layers=4,
      num_heads=4,
      segment_len=256,
      num_persistent=4,
      memory_depth=1,
      memory_chunk=16,
      theta_bias_init=2.0,
      alpha_bias_init=-8.0,
  )
  config = configs.base_config(model=model)
  config.data.source = "babilong"
  config.data.babilong_tasks = "qa1,qa2,qa3,qa4,qa5"
  config.data.babilong_lengths = "0k,1k"
  config.data.babilong_prompt = "plain"
  config.data.babilong_truncate = True
  config.data.seq_len = 8192

  config.train.steps = _lm.positive_int(args, "steps", 10_000)
  config.train.global_batch_size = 32
  config.train.log_every = 50
  config.train.eval_every = 1000
  config.train.eval_steps = 4
  config.train.checkpoint_every = 1000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 500
  config.optimizer.weight_decay = 0.01

  if args.get("runlocal"):  # the same pipeline at tiny sizes: a few steps on generated data
    config.model.width = 32
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.model.segment_len = 32
    config.model.memory_chunk = 8
    config.data.babilong_lengths = "0k"
    config.data.seq_len = 256
    config.train.global_batch_size = 4
    config.train.steps = min(config.train.steps, 4)
    config.train.log_every = 2
    config.train.eval_every = 0
    config.train.checkpoint_every = 4
    config.optimizer.warmup_steps = 2
  return config
