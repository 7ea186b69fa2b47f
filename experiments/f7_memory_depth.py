"""Figure 7: the LMM with a memory MLP of depth 1, 2, 3 or 4 (paper section 5.5),
perplexity by position.

Trained as Table 1 (experiments/t1_language_modeling.py) at 170M. The paper trains
these on a Pile subset; any corpus packed by titans_jax.tools.pretokenize works here
(the Pile's jsonl files with --text_key=text). Only model.memory_depth changes between
the four runs: layers and MLP width are the 170M LMM preset's (depth 2), so a deeper
memory adds its own weights (the learned W_0 per head and layer) and nothing else.

  python -m titans_jax.tools.pretokenize --inputs='/data/pile_subset/*.jsonl' --text_key=text \\
      --tokenizer=sentencepiece:/models/llama2/tokenizer.model --seq_len=4096 --num_shards=64 \\
      --out=/data/pile_subset/train
  # Train on a TPU pod (every worker runs it; the shards must be readable on each)
  for depth in 1 2 3 4; do
    TPU_NAME=my-v5p-32 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh \\
        --config=experiments/f7_memory_depth.py:depth=$depth,tokenizer=/models/llama2/tokenizer.model \\
        --workdir=/gcs/BUCKET/titans/f7_depth$depth \\
        --config.data.train_path='/data/pile_subset/train-*.array_record'
  done
  # (one machine: python -m titans_jax.main with the same --config and flags)
  # Loss / perplexity by position over long inputs:
  W=/gcs/BUCKET/titans/f7_depth2
  python -m titans_jax.evaluation.streaming --workdir=$W --random_tokens=65536  # speed only
  # The streaming CLI reads --text_file as byte tokens, which fits byte-level models only;
  # for these Llama-tokenized models use its Python API (the same curve and plot):
  python -c "
  import sys, numpy as np
  from titans_jax import train
  from titans_jax.data.tokenizers import load_tokenizer
  from titans_jax.evaluation import streaming
  model, config, step = train.load_model(sys.argv[1])
  ids = np.array(load_tokenizer(config.data.tokenizer).encode(open(sys.argv[2]).read()))
  ends, means = streaming.loss_curve(streaming.stream_losses(model, ids, 4096).nll, 16)
  [print(e, np.exp(m)) for e, m in zip(ends, means)]" $W long_document.txt
  # Local smoke run:
  python -m titans_jax.main --config=experiments/f7_memory_depth.py:depth=3,runlocal --workdir=/tmp/f7

Arguments: depth=1..4 (default 2), size=170M|340M|400M|760M (default 170M),
tokenizer=PATH, steps=N, runlocal. The paper shows this as a figure only.
"""

from experiments import _lm
from titans_jax import configs

DEPTHS = (1, 2, 3, 4)
ARGUMENTS = ("depth", "size", "tokenizer", "steps", "runlocal")


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  _lm.check_arguments(args, ARGUMENTS, "f7_memory_depth.py")
  depth = int(_lm.choice(args, "depth", tuple(map(str, DEPTHS)), "2"))
  size = _lm.choice(args, "size", _lm.SIZES, "170M")
  runlocal = bool(args.get("runlocal"))
  fields = _lm.model_fields(None if runlocal else size, "lmm")
  fields["memory_depth"] = depth  # Fig. 7's only variable
  return _lm.lm_config(fields, size=size, args=args, runlocal=runlocal)
