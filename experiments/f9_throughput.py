"""Figure 9: training throughput (tokens/s) against sequence length for Transformer++,
SWA, LMM, MAC, MAG and MAL (paper section 5.8; figure only, no numbers in the spec:
"LMM slightly slower than Mamba2 / Gated DeltaNet, MAL faster"; those two baselines are
not in the zoo, so they are not measured here).

  python benchmarks/throughput.py --config=experiments/f9_throughput.py            # CPU size
  python benchmarks/throughput.py --config=experiments/f9_throughput.py:size=170M  # accelerator
  python benchmarks/throughput.py --config=experiments/f9_throughput.py --quick    # smoke test
  # On a TPU VM (one host: each cell is one process on its chips; no pod launch needed)
  gcloud compute tpus tpu-vm ssh my-v5p-8 --zone=us-east5-a --worker=0 --command="
    cd ~/titans_jax && python3 -m pip install -q -e . psutil 'jax[tpu]' \\
        -f https://storage.googleapis.com/jax-releases/libtpu_releases.html &&
    python3 benchmarks/throughput.py --config=experiments/f9_throughput.py:size=170M --out=/tmp/f9"

One measurement (model x length) per subprocess: the full jitted train step (forward,
backward, AdamW update) on random tokens, median of `steps` after a compile step;
tokens/s = batch_size x length / median seconds. One table (rows = models, columns =
lengths) and JSON / Markdown under --out.

Arguments: size=small|170M|340M|400M|760M (default small: width 256, 4 layers, 4 heads,
a 1024-token vocabulary so the output layer does not hide the mixers on a CPU; a paper
size uses its preset with the Llama-2 vocabulary and bfloat16 compute).
"""

import ml_collections

from titans_jax import configs
from titans_jax.models import presets

SIZES = ("small",) + tuple(presets.SIZES)
MODELS = ("transformer", "swa", "lmm", "mac", "mag", "mal")
WINDOW = 512  # as experiments/_lm.py: SWA window and MAC segment


def get_config(arguments=None):
  args = configs.parse_arguments(arguments)
  unknown = sorted(set(args) - {"size"})
  if unknown:
    raise ValueError(f"f9_throughput.py: unknown argument(s) {unknown}; expected size=one of {SIZES}")
  by_lower = {s.lower(): s for s in SIZES}
  size = str(args.get("size", "small"))
  if size.lower() not in by_lower:
    raise ValueError(f"size={size!r} is unknown; expected one of {SIZES}")
  size = by_lower[size.lower()]
  config = ml_collections.ConfigDict()
  # Which models and lengths (Transformer++ = "transformer", SWA-only = "swa").
  config.models = MODELS
  config.lengths = (1024, 2048, 4096, 8192)
  # "small" builds ModelConfig(variant, **model); a paper size uses presets.model_config
  # (layers and MLP solved per variant) with `model` fields as overrides.
  config.size = "" if size == "small" else size
  if size == "small":
    config.model = dict(vocab_size=1024, width=256, num_layers=4, num_heads=4,
                        window=WINDOW, segment_len=WINDOW, dtype="float32")
    config.batch_size = 1
  else:
    config.model = dict(window=WINDOW, segment_len=WINDOW, dtype="bfloat16")
    config.batch_size = 8
  # Timed steps (median) after one compile step; a measurement stops past these limits.
  config.steps = 3
  config.timeout_s = 900
  config.memory_cap_gb = 16.0
  # --quick: a smoke test that finishes in seconds.
  config.quick = ml_collections.ConfigDict(dict(
      lengths=(128, 256), steps=1,
      model=dict(vocab_size=256, width=32, num_layers=1, num_heads=2, window=32, segment_len=32,
                 dtype="float32")))
  return config
