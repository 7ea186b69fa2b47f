"""GenomicBenchmarks (Gresova et al. 2023) as a Grain source: Titans Table 4, DNA classification.

The `genomic-benchmarks` package writes each dataset as one text file per sequence:

  <root>/<dataset>/train/<class_name>/<id>.txt
  <root>/<dataset>/test/<class_name>/<id>.txt

(`genomic_benchmarks.loc2seq.download_dataset(name, version=0, dest_path=root)`; root
defaults to ~/.genomic_benchmarks). A class's index is its folder name's place in the
sorted folder names, so train and test agree without a label file.

Tokens are single nucleotides, as in HyenaDNA (the paper's Table 4 baselines come from
its setup): PAD=0, A=1, C=2, G=3, T=4, N=5 (lower case read as upper case). An example
is `inputs` [seq_len] int32, right-padded with PAD; `weights` [seq_len] float32, 1 on the
sequence's bases; `label` int32 scalar.

Why right padding (HyenaDNA pads on the left): the Titans variants are causal, so with
the padding after the sequence no real position ever reads a pad token, and the
classification objective (train_step.classification_cross_entropy: logits mean-pooled
over the real positions) gives exactly what the unpadded sequence would give. Left pads
would pass through the memory's updates before the first base.

A sequence longer than seq_len keeps its first seq_len bases (HyenaDNA's tokenizer
truncates the same way); experiments/t4_dna.py picks seq_len >= each dataset's longest
sequence, so a full run truncates nothing.
"""

from __future__ import annotations

import os

import numpy as np

PAD_ID = 0
BASES = "ACGTN"
# Token ids used: PAD and the five bases. Models may use a larger vocabulary.
GENOMIC_VOCAB_SIZE = 1 + len(BASES)
SPLITS = ("train", "test")
DEFAULT_ROOT = "~/.genomic_benchmarks"  # where genomic_benchmarks downloads by default

# The five datasets of Titans Table 4 (paper column -> GenomicBenchmarks name).
TABLE4_DATASETS = {
    "Enhancer Cohn": "human_enhancers_cohn",
    "Enhancer Ens": "human_enhancers_ensembl",
    "Human Reg.": "human_ensembl_regulatory",
    "Non-TATA Promoters": "human_nontata_promoters",
    "Human OCR Ens.": "human_ocr_ensembl",
}


def _byte_table() -> np.ndarray:
  """byte -> token id; -1 marks a byte that is no base."""
  table = np.full((256,), -1, np.int32)
  for index, base in enumerate(BASES, start=1):
    table[ord(base)] = table[ord(base.lower())] = index
  return table


_TABLE = _byte_table()


def encode(text: bytes | str, *, where: str = "sequence") -> np.ndarray:
  """Bases -> int32 token ids (surrounding whitespace dropped). `where` names the file in errors."""
  raw = text.encode() if isinstance(text, str) else bytes(text)
  raw = raw.strip()
  ids = _TABLE[np.frombuffer(raw, np.uint8)]
  bad = np.flatnonzero(ids < 0)
  if bad.size:
    position = int(bad[0])
    char = raw[position:position + 1].decode("latin-1")
    raise ValueError(f"{where}: character {char!r} at position {position} is not a base; expected "
                     f"only {BASES} (upper or lower case), one sequence per file")
  if not raw:
    raise ValueError(f"{where} holds no bases; expected one DNA sequence of {BASES}")
  return ids


def decode(ids: np.ndarray) -> str:
  """Token ids -> bases (PAD dropped): for reading examples back."""
  return "".join(BASES[i - 1] for i in np.asarray(ids).tolist() if i != PAD_ID)


def split_dir(root: str, dataset: str, split: str) -> str:
  """<root>/<dataset>/<split>, or a ValueError that says how to download it."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r} is unknown; expected one of {SPLITS}")
  if not dataset:
    raise ValueError("data.genomic_dataset is empty; expected a GenomicBenchmarks name, e.g. "
                     f"one of {tuple(TABLE4_DATASETS.values())}")
  path = os.path.join(os.path.expanduser(root), dataset, split)
  if not os.path.isdir(path):
    raise ValueError(
        f"GenomicBenchmarks folder {path!r} does not exist; expected <root>/<dataset>/{split}/"
        f"<class_name>/*.txt with root = data.train_path, as written by `pip install "
        f"genomic-benchmarks` and genomic_benchmarks.loc2seq.download_dataset({dataset!r}, "
        f"version=0, dest_path=root)")
  return path


def class_names(root: str, dataset: str, split: str = "train") -> tuple[str, ...]:
  """The sorted class folder names of a split (a class's label is its index here)."""
  path = split_dir(root, dataset, split)
  names = tuple(sorted(entry.name for entry in os.scandir(path) if entry.is_dir()))
  if len(names) < 2:
    raise ValueError(f"GenomicBenchmarks folder {path!r} has {len(names)} class folder(s) "
                     f"{list(names)}; expected at least 2 (one folder of *.txt per class)")
  return names


class GenomicSource:
  """One GenomicBenchmarks split as fixed-length classification examples (random access).

  The file list is read once (sorted, so record i is the same file on every process);
  each file is read when its record is asked for, which keeps start-up fast on the
  ~290K files of human_ensembl_regulatory.
  """

  def __init__(self, root: str, dataset: str, *, split: str, seq_len: int):
    if seq_len < 1:
      raise ValueError(f"seq_len={seq_len} must be >= 1 (bases per example)")
    self.dataset, self.split, self.seq_len = dataset, split, seq_len
    self.classes = class_names(root, dataset, split)
    base = split_dir(root, dataset, split)
    self.files, labels = [], []
    for label, name in enumerate(self.classes):
      folder = os.path.join(base, name)
      paths = sorted(e.path for e in os.scandir(folder) if e.is_file() and e.name.endswith(".txt"))
      if not paths:
        raise ValueError(f"class folder {folder!r} holds no *.txt sequence files; expected one "
                         "file per sequence as genomic_benchmarks writes them")
      self.files.extend(paths)
      labels.extend([label] * len(paths))
    self.labels = np.asarray(labels, np.int32)

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict:
    path = self.files[int(index)]
    try:
      with open(path, "rb") as handle:
        ids = encode(handle.read(), where=path)
    except OSError as error:
      raise ValueError(f"cannot read sequence file {path!r}: {error.strerror}") from None
    ids = ids[:self.seq_len]  # keep the first seq_len bases (see the module docstring)
    inputs = np.full((self.seq_len,), PAD_ID, np.int32)
    inputs[:ids.shape[0]] = ids
    weights = (inputs != PAD_ID).astype(np.float32)
    return {"inputs": inputs, "weights": weights, "label": self.labels[int(index)]}
