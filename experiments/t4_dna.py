"""Table 4: DNA classification on GenomicBenchmarks (Titans section 5.5), top-1 accuracy.

The paper reports Enhancer Cohn 75.2, Enhancer Ens 89.6, Human Reg. 89.3, Non-TATA
Promoters 96.6, Human OCR Ens. 79.9, next to HyenaDNA's numbers, and gives neither its
model size nor its recipe. We train a small Titans from scratch on each dataset with the
HyenaDNA GenomicBenchmarks fine-tuning recipe (HazyResearch/hyena-dna,
configs/experiment/hg38/genomic_benchmark.yaml): AdamW, lr 6e-4, weight decay 0.1,
global batch 128, 100 epochs, cosine schedule with 1% warmup down to 0.1 x lr, gradient
clip 1.0, sequences padded to the longest, logits mean-pooled over the sequence
(`decoder: mode: pool`). The HyenaDNA paper's appendix may list batch 256; we follow the
repository's config file. Ours (uncertain, not from either paper): Adam b2 = 0.999
(PyTorch's default, which we assume HyenaDNA kept), no dropout (HyenaDNA: 0.1 on the
embedding), no pretraining (HyenaDNA fine-tuned a pretrained model), the model size
(2 layers x 128, as HyenaDNA's GenomicBenchmarks model), window / segment 64, and the
per-dataset sequence lengths and split sizes below (as we recall them from the
GenomicBenchmarks paper; their train + test sums match the totals listed in HyenaDNA's
config). Data: titans_jax/data/genomic.py (single-nucleotide tokens, right padding,
the test split as evaluation).

  # 1. Download (once; writes ~/.genomic_benchmarks/<dataset>/{train,test}/<class>/*.txt)
  pip install genomic-benchmarks
  python -c "from genomic_benchmarks.loc2seq import download_dataset; \\
      download_dataset('human_enhancers_cohn', version=0)"
  # 2. Train (evaluates on the whole test split every 10 epochs and at the end)
  python -m titans_jax.main --config=experiments/t4_dna.py:dataset=human_enhancers_cohn,model=lmm \\
      --workdir=/tmp/t4_cohn_lmm --config.data.train_path=$HOME/.genomic_benchmarks
  #    On a TPU pod slice (every worker runs it; the folder must be readable on each):
  TPU_NAME=my-v5p-8 ZONE=us-east5-a MOUNT_BUCKET=BUCKET launch/tpu_pod.sh \\
      --config=experiments/t4_dna.py:dataset=human_enhancers_cohn,model=lmm \\
      --workdir=/gcs/BUCKET/titans/t4_cohn_lmm --config.data.train_path=/data/genomic_benchmarks
  # 3. The Table 4 cell: the last "eval_accuracy" row of the run's metrics
  tail -n 1 /tmp/t4_cohn_lmm/metrics.jsonl
  # Table 4's row: the same for each dataset= below (one run per column).
  # Local smoke run (tiny model, a few steps; needs a folder in the layout above):
  python -m titans_jax.main --config=experiments/t4_dna.py:runlocal --workdir=/tmp/t4_runlocal \\
      --config.data.train_path=/path/to/folder

Arguments (comma-separated after ':'):
  dataset=human_enhancers_cohn|human_enhancers_ensembl|human_ensembl_regulatory|
    human_nontata_promoters|human_ocr_ensembl (default human_enhancers_cohn),
  model=lmm|mac|mag|mal (default lmm), steps=N (shortened run), runlocal.
"""

import dataclasses
import math

from experiments import _lm
from titans_jax import configs
from titans_jax.data import genomic
from titans_jax.models import presets

ARGUMENTS = ("dataset", "model", "steps", "runlocal")
MODELS = ("lmm", "mac", "mag", "mal")
DATASETS = tuple(genomic.TABLE4_DATASETS.values())
# dataset -> (classes, train sequences, test sequences, seq_len). seq_len: the longest
# sequence (as we recall: 500, 573, 802, 251, 593 bases) rounded up to a multiple of 64.
SPLITS = {
    "human_enhancers_cohn": (2, 20_843, 6_948, 512),
    "human_enhancers_ensembl": (2, 123_872, 30_970, 576),
    "human_ensembl_regulatory": (3, 231_348, 57_713, 832),
    "human_nontata_promoters": (2, 27_097, 9_034, 256),
    "human_ocr_ensembl": (2, 139_804, 34_952, 640),
}
GLOBAL_BATCH = 128  # HyenaDNA genomic_benchmark.yaml: dataset.batch_size
EPOCHS = 100
VOCAB = 8  # pad + A C G T N (genomic.GENOMIC_VOCAB_SIZE = 6), rounded up to 8
MODEL = dict(vocab_size=VOCAB, width=128, num_layers=2, num_heads=4, window=64, segment_len=64)
TINY = dict(vocab_size=VOCAB, width=32, num_layers=1, num_heads=2, window=16, segment_len=16,
            memory_chunk=8)
TINY_SEQ_LEN = 32


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  _lm.check_arguments(args, ARGUMENTS, "t4_dna.py")
  dataset = _lm.choice(args, "dataset", DATASETS, "human_enhancers_cohn")
  model = _lm.choice(args, "model", MODELS, "lmm")
  runlocal = bool(args.get("runlocal"))
  classes, train_size, test_size, seq_len = SPLITS[dataset]
  fields = presets.model_config(None, model, output_dim=classes, **(TINY if runlocal else MODEL))
  config = configs.base_config(model=dataclasses.asdict(fields))
  config.data.source = "genomic"
  config.data.genomic_dataset = dataset
  config.data.train_path = genomic.DEFAULT_ROOT
  config.data.seq_len = seq_len
  config.train.objective = "classification"

  epoch = math.ceil(train_size / GLOBAL_BATCH)
  steps = _lm.positive_int(args, "steps", EPOCHS * epoch)
  config.train.steps = steps
  config.train.global_batch_size = GLOBAL_BATCH
  config.train.log_every = 50
  config.train.eval_every = min(10 * epoch, steps)  # every 10 epochs
  # The whole test split per evaluation, each example once (the last batch is padded with
  # rows of weight 0).
  config.train.eval_steps = math.ceil(test_size / GLOBAL_BATCH)
  config.train.checkpoint_every = config.train.eval_every
  config.optimizer.learning_rate = 6e-4
  config.optimizer.weight_decay = 0.1
  config.optimizer.b2 = 0.999
  config.optimizer.clip_norm = 1.0
  config.optimizer.warmup_steps = max(1, steps // 100)  # HyenaDNA: 1% of the steps
  config.optimizer.end_lr_ratio = 0.1
  if runlocal:
    shrink(config, steps=_lm.positive_int(args, "steps", 4))
  return config


def shrink(config, *, steps: int):
  """runlocal: tiny model (above), seq_len 32, a few steps of 4 rows, one evaluation at the end.

  No folder is generated here: point data.train_path at one (tests write a tiny fake one).
  """
  config.data.seq_len = TINY_SEQ_LEN
  config.train.steps = min(steps, 4)
  config.train.global_batch_size = 4
  config.train.log_every = 1
  config.train.eval_every = config.train.steps
  config.train.eval_steps = 1
  config.train.checkpoint_every = config.train.steps
  config.optimizer.warmup_steps = 1
  return config
