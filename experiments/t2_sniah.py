"""Table 2: RULER single needle in a haystack (S-NIAH-1 passkey / -2 number / -3 uuid) at
2K, 4K, 8K and 16K tokens.

Nothing here is trained for Table 2: the paper scores the Table 1 language models, so
this config is the T1 training config (experiments/t1_language_modeling.py, same
arguments), kept as its own file so each table has one. The evaluation settings
(tasks, lengths) live in the command below; the RULER CLI takes them as flags and
reads no config section, so none is recorded here.

  # Train (or reuse) a Table 1 model, e.g. the 760M MAC:
  TPU_NAME=my-v5p-128 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh \\
      --config=experiments/t2_sniah.py:size=760M,model=mac,tokenizer=/models/llama2/tokenizer.model \\
      --workdir=/gcs/BUCKET/titans/t1_mac_760m \\
      --config.data.train_path='/data/fineweb_edu/train-*.array_record'
  # Table 2's row (the essay haystack of S-NIAH-2 / -3 is RULER's Paul Graham essays, as
  # one plain text file; the tokenizer comes from the run's data.tokenizer):
  python -m titans_jax.evaluation.ruler --workdir=/gcs/BUCKET/titans/t1_mac_760m \\
      --tasks=niah_single_1,niah_single_2,niah_single_3 --lengths=2048,4096,8192,16384 \\
      --samples=100 --essay_path=/data/ruler/pg_essays.txt

Arguments: as experiments/t1_language_modeling.py (size, model, tokenizer, steps,
runlocal). The paper's Table 2 compares at 16K: MAC PK 98.4 / N 97.4 / W 95.2, DeltaNet
71.4 / 5.4 / 0.0 (spec section 5); lengths beyond the 4K training context are
extrapolation for every model.
"""

from experiments import t1_language_modeling


def get_config(arguments=None):
  return t1_language_modeling.get_config(arguments)
