"""Table 1: language modelling and zero-shot common-sense reasoning (Titans section 5.2).

The paper's recipe (spec section 4): FineWeb-Edu, Llama-2 tokenizer (32K), context 4096,
AdamW peak lr 4e-4 with cosine decay, 0.5M tokens per batch (128 rows of 4096), weight
decay 0.1, gradient clip 1.0, warmup 1B tokens (1908 steps); 15B tokens (28,611 steps)
for 170M-400M, 30B (57,221 steps) for 760M. Sizes from titans_jax.models.presets.

  # 1. FineWeb-Edu parquet files -> packed shards of 4097 tokens (Llama-2 tokenizer)
  python -m titans_jax.tools.pretokenize --inputs='/data/fineweb-edu/sample/100BT/*.parquet' \\
      --text_key=text --tokenizer=sentencepiece:/models/llama2/tokenizer.model --seq_len=4096 \\
      --num_shards=256 --out=/data/fineweb_edu/train
  #    (held-out files the same way, --out=/data/fineweb_edu/val; for
  #    --config.data.reset_at_documents=True add --align=16, the memory chunk, or
  #    --align=512 for MAC, its segment)
  #    Or from the Hub through TFDS ArrayRecord (network once, pip install datasets):
  #    --tfds_hf=HuggingFaceFW/fineweb-edu:sample-10BT --tfds_data_dir=/data/tfds --tfds_prepare
  #    --tfds_split='train[:99%]' in place of --inputs (titans_jax/data/text_sources.py)
  # 2. Train on a TPU pod (every worker runs it; the shards must be readable on each)
  TPU_NAME=my-v5p-128 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh \\
      --config=experiments/t1_language_modeling.py:size=760M,model=mac,tokenizer=/models/llama2/tokenizer.model \\
      --workdir=/gcs/BUCKET/titans/t1_mac_760m \\
      --config.data.train_path='/data/fineweb_edu/train-*.array_record' \\
      --config.data.eval_path='/data/fineweb_edu/val-*.array_record'
  # 3. The Table 1 row (Wiki. ppl, LMB. ppl / acc, PIQA ... BoolQ, Avg.)
  python -m titans_jax.evaluation.zero_shot --workdir=/gcs/BUCKET/titans/t1_mac_760m \\
      --data_dir=/data/zero_shot --fetch \\
      --tasks=wikitext,lambada_openai,piqa,hellaswag,winogrande,arc_easy,arc_challenge,social_iqa,boolq
  # Local smoke run (tiny model of the same variant, random tokens, a few steps):
  python -m titans_jax.main --config=experiments/t1_language_modeling.py:model=mag,runlocal \\
      --workdir=/tmp/t1_runlocal

Arguments (comma-separated after ':'):
  size=170M|340M|400M|760M (default 760M; the paper's Table 1 has 340M, 400M, 760M blocks),
  model=lmm|mac|mag|mal|transformer|swa|ttt|deltanet (default mac; ttt and deltanet are
    LMM settings, see presets.BASELINES),
  tokenizer=PATH (the SentencePiece model the shards were made with; recorded as
    data.tokenizer so the zero-shot and RULER CLIs tokenize as training did),
  steps=N (shortened run; warmup stays 1/15 (1/30) of it), runlocal.

Our choices where the paper is silent: SWA window and MAC segment 512 tokens
(experiments/_lm.py: WINDOW); cosine decay to 0.1 x peak; documents packed without
state resets (data.reset_at_documents=False), as usual for LM pretraining.
"""

from experiments import _lm
from titans_jax import configs

ARGUMENTS = ("size", "model", "tokenizer", "steps", "runlocal")


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  _lm.check_arguments(args, ARGUMENTS, "t1_language_modeling.py")
  size = _lm.choice(args, "size", _lm.SIZES, "760M")
  model = _lm.choice(args, "model", _lm.MODELS, "mac")
  runlocal = bool(args.get("runlocal"))
  fields = _lm.model_fields(None if runlocal else size, model)
  return _lm.lm_config(fields, size=size, args=args, runlocal=runlocal)
