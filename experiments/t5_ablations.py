"""Table 5: ablations of Titans at 400M (paper section 5.9), trained as Table 1.

Rows (argument `ablation=`), each a switch of titans_jax.models.ModelConfig on the
400M LMM of the reference row; the layer count and MLP width stay those of that row,
so each ablation changes only the field it names:

    ablation              paper row               ModelConfig change
    lmm                   LMM (reference)         -  (depth-2 memory, conv, momentum,
                                                      forgetting, 4 persistent tokens)
    linear_memory         Linear Memory           memory_depth=1
    no_convolution        w/o Convolution         use_conv=False
    no_momentum           w/o Momentum            memory_momentum=False  (eta = 0, Eq. 13)
    no_weight_decay       w/o Weight Decay        memory_forgetting=False (alpha = 0, Eq. 13)
    no_persistent_memory  w/o Persistent Memory   num_persistent=0  (Eq. 19)
    mac / mag / mal       +Attn (MAC / MAG / MAL) the architecture at 400M, its own
                                                  layer count (presets)

Paper numbers (spec section 5; the other rows: see paper): LMM 27.01 ppl / 47.83
reasoning acc / 92.68 S-NIAH mean; w/o weight decay 29.04 / 45.11 / 85.60.

  # Train on a TPU pod (every worker runs it; shards from experiments/t1_language_modeling.py)
  TPU_NAME=my-v5p-64 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh \\
      --config=experiments/t5_ablations.py:ablation=no_momentum,tokenizer=/models/llama2/tokenizer.model \\
      --workdir=/gcs/BUCKET/titans/t5_no_momentum \\
      --config.data.train_path='/data/fineweb_edu/train-*.array_record'
  # Long-context column first (S-NIAH, as Table 2; writes WORKDIR/ruler.json):
  python -m titans_jax.evaluation.ruler --workdir=/gcs/BUCKET/titans/t5_no_momentum \\
      --tasks=niah_single_1,niah_single_2,niah_single_3 --lengths=2048,4096,8192,16384 \\
      --essay_path=/data/ruler/pg_essays.txt
  # Then the row: prints Table 1's columns and Table 5's ppl / reasoning / S-NIAH (the last
  # read from WORKDIR/ruler.json), into WORKDIR/zero_shot.json
  python -m titans_jax.evaluation.zero_shot --workdir=/gcs/BUCKET/titans/t5_no_momentum \\
      --data_dir=/data/zero_shot --fetch
  # Local smoke run (the same switch on a tiny LMM, random tokens):
  python -m titans_jax.main --config=experiments/t5_ablations.py:ablation=linear_memory,runlocal \\
      --workdir=/tmp/t5_runlocal

Arguments: ablation=<row above> (default lmm), tokenizer=PATH, steps=N, runlocal.
How the paper averages its ppl / reasoning / S-NIAH columns is not in the spec: we read
ppl as the mean of Wiki. and LMB. perplexity, reasoning as zero_shot's Avg., and S-NIAH
as the mean over RULER's three tasks and four lengths (our reading, to be checked;
titans_jax.evaluation.zero_shot.table5_values computes them).
"""

from experiments import _lm
from titans_jax import configs

SIZE = "400M"
# Paper Table 5's component ablations: the one ModelConfig change of each row.
ABLATIONS = {
    "lmm": {},
    "linear_memory": {"memory_depth": 1},
    "no_convolution": {"use_conv": False},
    "no_momentum": {"memory_momentum": False},
    "no_weight_decay": {"memory_forgetting": False},
    "no_persistent_memory": {"num_persistent": 0},
}
ARCHITECTURES = ("mac", "mag", "mal")  # the "+Attn" rows
ROWS = tuple(ABLATIONS) + ARCHITECTURES
ARGUMENTS = ("ablation", "tokenizer", "steps", "runlocal")


def model_fields(ablation: str, runlocal: bool) -> dict:
  size = None if runlocal else SIZE
  if ablation in ARCHITECTURES:
    return _lm.model_fields(size, ablation)
  fields = _lm.model_fields(size, "lmm")  # layers and MLP width of the reference row
  fields.update(ABLATIONS[ablation])
  return fields


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  _lm.check_arguments(args, ARGUMENTS, "t5_ablations.py")
  ablation = _lm.choice(args, "ablation", ROWS, "lmm")
  runlocal = bool(args.get("runlocal"))
  return _lm.lm_config(model_fields(ablation, runlocal), size=SIZE, args=args, runlocal=runlocal)
