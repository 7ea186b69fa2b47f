"""Text corpora for language modelling: Hugging Face datasets through TFDS, local parquet.

Two ways from a corpus to training rows (spec section 5: FineWeb-Edu for Table 1):

1. Packed, offline (the recommended path for the paper's runs). Prepare the corpus once as
   TFDS ArrayRecord files, then pack it into shards of seq_len + 1 tokens:

       python -m titans_jax.tools.pretokenize --tfds_hf=HuggingFaceFW/fineweb-edu:sample-10BT \\
           --tfds_data_dir=/data/tfds --tfds_prepare --tfds_split='train[:99%]' \\
           --tokenizer=sentencepiece:/models/llama2.model --seq_len=4096 --num_shards=256 \\
           --out=/data/fineweb_edu/train

   (or `--inputs='/data/fineweb-edu/*.parquet'` for parquet files already on disk, read with
   `grain.experimental.ParquetIterDataset`) and train with data.source="packed". Every
   token is a target once; documents are cut only at row ends.

2. One document per example, on the fly (`data.source="hf_tfds"`, `TfdsDocumentSource`):
   example i is document i of the prepared split, tokenized when read, wrapped in the
   tokenizer's BOS / EOS, cut to seq_len + 1 tokens or padded with zero loss weight.
   Random access, nothing written but the TFDS preparation, any tokenizer, changeable
   without re-packing. The cost: a document longer than seq_len + 1 tokens loses its tail,
   and a shorter one leaves padding that is computed but not learned from (FineWeb-Edu
   documents average ~1K Llama-2 tokens: at seq_len=4096 most of every row is padding).
   Packing random-access records into full rows would need every document's length, i.e.
   a pass over the corpus: that pass is option 1. Use this source for small runs, fine-
   tuning, evaluation splits or seq_len near the typical document length.

FineWeb-Edu through TFDS: `prepare_huggingface_tfds()` wraps
`tfds.dataset_builders.HuggingfaceDatasetBuilder(hf_repo_id=..., hf_config=...,
file_format="array_record", data_dir=...)` and `download_and_prepare()` (the
`huggingface:` name lookup of `tfds.builder` is avoided: slow and fragile). Our default
subset is `HuggingFaceFW/fineweb-edu` config `sample-10BT` (about 10B GPT-2 tokens in
about 10M documents; the paper trains on 15B / 30B tokens of FineWeb-Edu without naming a
subset: 1.5 / 3 epochs of this one, `sample-100BT` covers them in one pass at ~10x the
download). It needs the network, the `datasets` package
(`pip install datasets`, tensorflow-datasets' "huggingface" extra) and the disk for the
Hugging Face cache plus the ArrayRecord copy. Once prepared, everything here reads the
files offline (`open_prepared`): the builder is rebuilt from `data_dir` (`tfds.builder`
reading dataset_info.json / features.json), never from the Hub.

Not tested here (no network): the `HuggingfaceDatasetBuilder` call itself. The tests build
a small TFDS dataset in ArrayRecord format locally under the same `<data_dir>/<name>/
<config>/<version>` layout and read it through `open_prepared` / `as_data_source`, the
path the prepared FineWeb-Edu files take.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Sequence

import numpy as np

from titans_jax.data.sources import example_from_tokens
from titans_jax.data.tokenizers import Tokenizer, load_tokenizer

FINEWEB_EDU_REPO = "HuggingFaceFW/fineweb-edu"
FINEWEB_EDU_CONFIG = "sample-10BT"  # our choice of subset (see the module docstring)

# Characters read per token kept, before tokenizing a long document (speed guard, see
# TfdsDocumentSource); a token of more characters than this is not seen in practice.
_CHARS_PER_TOKEN_GUARD = 32
# Tokens past the kept ones that the character cut must leave (tokenization near a cut
# can differ from the whole document's).
_CUT_MARGIN = 8


def tfds_name(hf_repo_id: str, hf_config: str | None = None) -> str:
  """The TFDS name ("name/config") HuggingfaceDatasetBuilder writes `hf_repo_id` under.

  As tfds' conversion_utils.to_tfds_name: lower case, '/' -> '__', other characters
  outside [A-Za-z0-9_] -> '_' ("HuggingFaceFW/fineweb-edu", "sample-10BT" ->
  "huggingfacefw__fineweb_edu/sample_10bt").
  """
  if not hf_repo_id or not str(hf_repo_id).strip():
    raise ValueError("hf_repo_id is empty; expected a Hugging Face dataset id such as "
                     f"{FINEWEB_EDU_REPO!r}")

  def convert(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name.strip().lower().replace("/", "__"))

  return convert(hf_repo_id) + (f"/{convert(hf_config)}" if hf_config else "")


def _require_data_dir(data_dir) -> str:
  if not data_dir or not str(data_dir).strip():
    raise ValueError("a TFDS data_dir is required (data.tfds_data_dir / --tfds_data_dir): the "
                     "folder the prepared ArrayRecord files live in, e.g. /data/tfds")
  return os.path.expanduser(str(data_dir))


def _prepare_command(hf_repo_id: str, hf_config: str | None, data_dir: str) -> str:
  spec = hf_repo_id + (f":{hf_config}" if hf_config else "")
  return (f"python -m titans_jax.tools.pretokenize --tfds_hf={spec} --tfds_data_dir={data_dir} "
          "--tfds_prepare ... (or titans_jax.data.text_sources.prepare_huggingface_tfds("
          f"{hf_repo_id!r}, {hf_config!r}, {data_dir!r}))")


def _base_split(split: str) -> list[str]:
  """'train[:99%]+validation' -> ['train', 'validation']."""
  return [re.sub(r"\[.*\]$", "", part.strip()) for part in str(split).split("+") if part.strip()]


def check_split(builder, split: str) -> None:
  """ValueError unless every split named in `split` (slices allowed) was prepared."""
  available = sorted(builder.info.splits.keys())
  missing = [name for name in _base_split(split) if name not in available]
  if missing or not _base_split(split):
    raise ValueError(f"split {split!r} is not in the prepared dataset {builder.info.full_name} "
                     f"(its splits: {available}); set the split to one of them, sliced if needed, "
                     "e.g. train_split='train[:99%]', eval_split='train[99%:]' for a corpus with "
                     "only a train split (FineWeb-Edu)")


def open_prepared(hf_repo_id: str, hf_config: str | None, data_dir: str):
  """The prepared dataset's builder, read from `data_dir` only (no network).

  ValueError with the preparation command when it is not there.
  """
  import tensorflow_datasets as tfds  # lazily: heavy, and only these sources need it

  data_dir = _require_data_dir(data_dir)
  name = tfds_name(hf_repo_id, hf_config)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as error:  # DatasetNotFoundError and friends
    raise ValueError(f"{hf_repo_id!r} (config {hf_config!r}) is not prepared in "
                     f"data_dir={data_dir!r} (looked for {name}/<version> there: "
                     f"{str(error).splitlines()[0] if str(error) else type(error).__name__}). "
                     f"Prepare it once, with network access: "
                     f"{_prepare_command(hf_repo_id, hf_config, data_dir)}") from None
  if not builder.info.splits:
    raise ValueError(f"{name} in data_dir={data_dir!r} holds no prepared split (an interrupted "
                     f"preparation?); prepare it again: "
                     f"{_prepare_command(hf_repo_id, hf_config, data_dir)}")
  return builder


def prepare_huggingface_tfds(hf_repo_id: str = FINEWEB_EDU_REPO,
                             hf_config: str | None = FINEWEB_EDU_CONFIG,
                             data_dir: str | None = None, *, split: str = "train",
                             hf_num_proc: int | None = None, tfds_num_proc: int | None = None):
  """Downloads a Hugging Face dataset and writes it as TFDS ArrayRecord files in data_dir.

  Returns the builder (`builder.as_data_source(split)` gives random access). A dataset
  already prepared in data_dir is opened from its files, without the network. Otherwise
  this needs network access to the Hugging Face Hub (HF_TOKEN / HUGGING_FACE_HUB_TOKEN for
  gated sets), the `datasets` package and disk for both the HF cache and the copy.
  `split` is checked to exist afterwards. Untested here: it cannot run without network.
  """
  data_dir = _require_data_dir(data_dir)
  try:
    builder = open_prepared(hf_repo_id, hf_config, data_dir)
  except ValueError:
    builder = None
  if builder is None:
    try:
      import datasets  # noqa: F401  (HuggingfaceDatasetBuilder needs it; a clear error first)
    except ImportError:
      raise ValueError("preparing a Hugging Face dataset through TFDS needs the `datasets` "
                       "package: pip install datasets (or pip install -e '.[huggingface]' "
                       "in this repository)") from None
    import tensorflow_datasets as tfds

    try:
      builder = tfds.dataset_builders.HuggingfaceDatasetBuilder(
          hf_repo_id=hf_repo_id, hf_config=hf_config or None, file_format="array_record",
          data_dir=data_dir, hf_num_proc=hf_num_proc, tfds_num_proc=tfds_num_proc)
    except Exception as error:  # RuntimeError wrapping the Hub's error
      cause = error.__cause__ or error
      raise ValueError(f"cannot load the Hugging Face dataset {hf_repo_id!r} config {hf_config!r}: "
                       f"{type(cause).__name__}: {cause}. Preparing needs network access to the "
                       "Hugging Face Hub (and a token for gated datasets) and an existing "
                       "repo id / config name") from None
    builder.download_and_prepare()
  check_split(builder, split)
  return builder


def _text(record, text_key: str) -> str | None:
  if text_key not in record:
    raise ValueError(f"the records have no feature {text_key!r}; expected text_key to name the "
                     f"text feature (they have {sorted(record)})")
  text = record[text_key]
  if text is None:
    return None
  if isinstance(text, np.ndarray) and text.shape == ():
    text = text.item()
  return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def iter_texts(data_source: Sequence, text_key: str = "text", *,
               read_size: int = 256) -> Iterator[str]:
  """Every record's text in order (None / missing values skipped): for pretokenizing."""
  getitems = getattr(data_source, "__getitems__", None)
  for start in range(0, len(data_source), read_size):
    keys = list(range(start, min(start + read_size, len(data_source))))
    records = getitems(keys) if getitems else [data_source[key] for key in keys]
    for record in records:
      text = _text(record, text_key)
      if text is not None:
        yield text


class TfdsDocumentSource:
  """Random access: example i = document i of a prepared TFDS split (ArrayRecord).

  The text feature is tokenized when read ([BOS] doc [EOS], the tokenizer's ids unless
  given), cut to seq_len + 1 tokens or padded (pad id: EOS, else 0); padded positions
  carry zero loss weight. A document longer than _CHARS_PER_TOKEN_GUARD x (seq_len + 1)
  characters is cut before tokenizing (a speed guard: the kept tokens are those of the
  whole document except where a single token would span more characters than that);
  if the cut leaves too few tokens, the whole document is tokenized.
  See the module docstring for the trade-off against packed shards.
  """

  def __init__(self, builder_or_source, *, seq_len: int, tokenizer: Tokenizer | str = "byte",
               split: str | None = None, text_key: str = "text", bos_id: int | None = -1,
               eos_id: int | None = -1):
    """builder_or_source: a TFDS builder (then `split` is read with as_data_source) or a
    sequence of records (dicts). bos_id / eos_id: -1 = the tokenizer's, None = none."""
    if seq_len < 1:
      raise ValueError(f"seq_len={seq_len}; expected >= 1")
    if hasattr(builder_or_source, "as_data_source"):
      if split is None:
        raise ValueError("a TFDS builder needs split= (e.g. 'train' or 'train[:99%]')")
      check_split(builder_or_source, split)
      try:
        self.source = builder_or_source.as_data_source(split)
      except NotImplementedError as error:  # prepared in another file format
        raise ValueError(f"{builder_or_source.info.full_name} was not prepared as ArrayRecord "
                         f"(random access): {error}") from None
    else:
      self.source = builder_or_source
    self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    self.bos_id = self.tokenizer.bos_id if bos_id == -1 else bos_id
    self.eos_id = self.tokenizer.eos_id if eos_id == -1 else eos_id
    self.pad_id = self.eos_id if self.eos_id is not None else 0
    self.seq_len, self.text_key = int(seq_len), text_key
    if len(self.source) < 1:
      raise ValueError(f"split {split!r} holds no records")
    _text(self.source[0], text_key)  # a wrong text_key fails here, not mid-training

  @property
  def vocab_size(self) -> int:
    """The smallest model vocabulary that holds every id this source gives."""
    return max([self.tokenizer.vocab_size] + [i + 1 for i in (self.bos_id, self.eos_id)
                                              if i is not None])

  def __len__(self) -> int:
    return len(self.source)

  def tokens(self, text: str | None) -> list[int]:
    """[BOS] + ids + [EOS], at most seq_len + 1 of them."""
    width = self.seq_len + 1
    ids: list[int] = []
    if text:
      limit = _CHARS_PER_TOKEN_GUARD * width
      ids = self.tokenizer.encode(text[:limit])
      if len(text) > limit and len(ids) < width + _CUT_MARGIN:
        ids = self.tokenizer.encode(text)
    wrapped = ([self.bos_id] if self.bos_id is not None else []) + list(ids) + (
        [self.eos_id] if self.eos_id is not None else [])
    return wrapped[:width]

  def __getitem__(self, index: int) -> dict:
    tokens = self.tokens(_text(self.source[int(index)], self.text_key))
    width = self.seq_len + 1
    weights = np.zeros((self.seq_len,), np.float32)
    weights[:max(len(tokens) - 1, 0)] = 1.0  # targets that are real tokens
    padded = np.full((width,), self.pad_id, np.int32)
    padded[:len(tokens)] = tokens
    return example_from_tokens(padded, weights)


def make_hf_tfds_source(data_config, *, split: str, vocab_size: int) -> TfdsDocumentSource:
  """data.source="hf_tfds" (see titans_jax/configs.py for the fields)."""
  repo = data_config.get("hf_repo_id", "") or ""
  if not repo.strip():
    raise ValueError("data.source='hf_tfds' needs data.hf_repo_id (e.g. "
                     f"{FINEWEB_EDU_REPO!r}) and data.hf_config (e.g. {FINEWEB_EDU_CONFIG!r})")
  if not data_config.get("tfds_data_dir", ""):
    raise ValueError("data.source='hf_tfds' needs data.tfds_data_dir: the folder the dataset was "
                     "prepared in (" + _prepare_command(repo, data_config.get("hf_config", ""),
                                                        "DIR") + ")")
  builder = open_prepared(repo, data_config.get("hf_config", "") or None,
                          data_config.tfds_data_dir)
  name_split = data_config.train_split if split == "train" else data_config.eval_split
  source = TfdsDocumentSource(builder, split=name_split, seq_len=int(data_config.seq_len),
                              tokenizer=data_config.get("tokenizer", "") or "byte",
                              text_key=data_config.get("text_key", "text"))
  if source.vocab_size > vocab_size:
    raise ValueError(f"data.tokenizer={data_config.get('tokenizer', '')!r} gives ids up to "
                     f"{source.vocab_size - 1} but model.vocab_size is {vocab_size}; expected "
                     f"model.vocab_size >= {source.vocab_size}")
  return source


def iter_parquet_texts(paths: Sequence[str], text_key: str = "text") -> Iterator[str]:
  """The `text_key` column of parquet files, file after file, row after row, streamed a
  row group at a time through grain.experimental.ParquetIterDataset (needs pyarrow).

  Each file is its own ParquetIterDataset (given several paths it would interleave
  them), so documents keep the files' order. Null texts are skipped.
  """
  import grain
  import pyarrow.parquet as parquet

  for path in paths:
    handle = parquet.ParquetFile(path)
    columns = handle.schema_arrow.names
    if text_key not in columns:
      raise ValueError(f"{path} has no column {text_key!r}; expected --text_key to name its text "
                       f"column (it has {columns})")
    if handle.metadata.num_row_groups == 0:
      continue  # an empty file (ParquetIterDataset would fail reading row group 0)
    for record in grain.experimental.ParquetIterDataset(path):
      text = _text(record, text_key)
      if text is not None:
        yield text
