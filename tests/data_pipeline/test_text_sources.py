"""Language-modelling text sources without network: local parquet streamed by
grain.experimental.ParquetIterDataset into packed shards, and a Hugging Face dataset as
TFDS prepares it (ArrayRecord under <data_dir>/<name>/<config>/<version>) read back
document by document (data.source="hf_tfds") or packed by the pretokenize tool.

The tfds.dataset_builders.HuggingfaceDatasetBuilder call itself needs the Hub and is not
exercised here: a small GeneratorBasedBuilder writes the same layout and format instead.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from titans_jax import configs
from titans_jax.data import make_batches, make_iterator, text_sources
from titans_jax.data.registry import make_source
from titans_jax.data.tokenizers import ByteTokenizer
from titans_jax.tools import pretokenize


def unpack(source) -> bytes:
  """The packed stream of a one-shard source (rows overlap by one token)."""
  rows = [source[i]["inputs"] for i in range(len(source))]
  return bytes(np.concatenate(rows).astype(np.uint8))


# --- parquet ---------------------------------------------------------------------------

def write_parquet(path, texts, row_group_size):
  pyarrow = pytest.importorskip("pyarrow", reason="parquet inputs need pyarrow")
  import pyarrow.parquet as parquet

  table = pyarrow.table({"id": list(range(len(texts))), "text": texts})
  parquet.write_table(table, str(path), row_group_size=row_group_size)


def test_parquet_files_stream_into_packed_shards_in_order(tmp_path):
  # Given two parquet files of several row groups each, one null text among them
  first = [f"first file, document {i}: " + "ab" * i for i in range(7)]
  second = [f"second file, document {i}." for i in range(5)]
  write_parquet(tmp_path / "a.parquet", first[:3] + [None] + first[3:], row_group_size=3)
  write_parquet(tmp_path / "b.parquet", second, row_group_size=2)
  # When the pretokenize tool packs them (ParquetIterDataset, one file after the other)
  texts = list(text_sources.iter_parquet_texts([str(tmp_path / "a.parquet")], "text"))
  assert texts == first  # every row group read, the null skipped
  info = pretokenize.main([f"--inputs={tmp_path / '*.parquet'}", f"--out={tmp_path / 'train'}",
                           "--seq_len=32", "--eos_id=0"])
  # Then the packed rows, read as data.source="packed", are the documents in file order
  config = configs.base_config()
  config.data.update(source="packed", seq_len=32, train_path=str(tmp_path / "train-*.array_record"))
  source = make_source(config.data, split="train", vocab_size=256)
  assert len(source) == info["num_records"] > 3
  expected = b"".join(text.encode() + b"\0" for text in first + second)
  stream = unpack(source)
  assert stream == expected[:len(stream)] and len(stream) > len(expected) - 33


def test_parquet_without_the_text_column_is_a_clear_error(tmp_path):
  write_parquet(tmp_path / "a.parquet", ["some text"] * 4, row_group_size=2)
  with pytest.raises(ValueError, match=r"has no column 'body'.*\['id', 'text'\]"):
    list(text_sources.iter_parquet_texts([str(tmp_path / "a.parquet")], "body"))


# --- a Hugging Face dataset as TFDS writes it ------------------------------------------

TEXTS = [f"doc {i} " + "xyz" * i for i in range(10)]


class TinyCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What HuggingfaceDatasetBuilder(hf_repo_id="Tiny/Corpus", hf_config="sample-1",
  file_format="array_record") writes: <data_dir>/tiny__corpus/sample_1/1.0.0, a train
  split only, a Text feature "text" (unregistered: read back from the files alone)."""

  name = "tiny__corpus"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="sample_1")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "id": tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for index, text in enumerate(TEXTS):
      yield index, {"text": text, "id": index}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  TinyCorpus(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return str(data_dir)


def hf_config(data_dir, **fields):
  config = configs.base_config()
  config.data.update(source="hf_tfds", hf_repo_id="Tiny/Corpus", hf_config="sample-1",
                     tfds_data_dir=data_dir, seq_len=16, train_split="train",
                     eval_split="train[8:]", tokenizer="byte")
  config.data.update(**fields)
  return config


def test_tfds_names_follow_the_huggingface_builder():
  assert text_sources.tfds_name("HuggingFaceFW/fineweb-edu", "sample-10BT") == (
      "huggingfacefw__fineweb_edu/sample_10bt")
  assert text_sources.tfds_name("Tiny/Corpus") == "tiny__corpus"
  defaults = configs.base_config().data
  assert (defaults.hf_repo_id, defaults.hf_config) == (text_sources.FINEWEB_EDU_REPO,
                                                       text_sources.FINEWEB_EDU_CONFIG)


def test_hf_tfds_source_gives_one_document_per_example(prepared):
  # When data.source="hf_tfds" opens the prepared split (offline, from the files)
  config = hf_config(prepared)
  source = make_source(config.data, split="train", vocab_size=256)
  assert len(source) == len(TEXTS)
  # Then example i is record i (TFDS shuffled them when preparing; "id" names the text) as
  # bytes: cut to seq_len + 1, or padded with no loss
  for index in range(len(TEXTS)):
    example = source[index]
    text = np.frombuffer(TEXTS[int(source.source[index]["id"])].encode(), np.uint8)
    kept = min(len(text), 17)
    tokens = np.concatenate([example["inputs"][:1], example["targets"]])
    np.testing.assert_array_equal(tokens[:kept], text[:kept])
    assert example["weights"].sum() == kept - 1
    np.testing.assert_array_equal(example["inputs"][1:], example["targets"][:-1])
  weights = {int(source.source[i]["id"]): source[i]["weights"] for i in range(len(TEXTS))}
  assert weights[0][-1] == 0.0 and weights[9].min() == 1.0
  # and the evaluation split is a TFDS slice of the only split
  assert len(make_source(config.data, split="eval", vocab_size=256)) == 2
  # and the pipeline batches it
  batch = next(make_iterator(make_batches(source, global_batch_size=4, seed=0)))
  assert batch["inputs"].shape == (4, 16) and batch["weights"].shape == (4, 16)


def test_documents_are_wrapped_in_the_tokenizers_markers(prepared):
  builder = text_sources.open_prepared("Tiny/Corpus", "sample-1", prepared)
  source = text_sources.TfdsDocumentSource(builder, split="train", seq_len=12,
                                           tokenizer=ByteTokenizer(bos_id=256, eos_id=257))
  assert source.vocab_size == 258
  first = [int(source.source[i]["id"]) for i in range(len(TEXTS))].index(0)
  example = source[first]  # "doc 0 " -> [BOS] d o c ' ' 0 ' ' [EOS] then EOS padding
  tokens = np.concatenate([example["inputs"][:1], example["targets"]])
  np.testing.assert_array_equal(tokens[:8], [256, *b"doc 0 ", 257])
  assert (tokens[8:] == 257).all()
  np.testing.assert_array_equal(example["weights"], [1.0] * 7 + [0.0] * 5)


def test_hf_tfds_mistakes_are_clear(prepared):
  with pytest.raises(ValueError, match="split 'validation' is not in the prepared dataset"):
    make_source(hf_config(prepared, eval_split="validation").data, split="eval", vocab_size=256)
  with pytest.raises(ValueError, match="is not prepared in data_dir.*--tfds_prepare"):
    make_source(hf_config(prepared, hf_repo_id="Other/corpus").data, split="train",
                vocab_size=256)
  with pytest.raises(ValueError, match="needs data.tfds_data_dir"):
    make_source(hf_config("").data, split="train", vocab_size=256)
  with pytest.raises(ValueError, match="expected model.vocab_size >= 256"):
    make_source(hf_config(prepared).data, split="train", vocab_size=100)
  with pytest.raises(ValueError, match=r"no feature 'body'.*\['id', 'text'\]"):
    make_source(hf_config(prepared, text_key="body").data, split="train", vocab_size=256)
  # An already prepared dataset is opened from its files: no network, no `datasets`
  builder = text_sources.prepare_huggingface_tfds("Tiny/Corpus", "sample-1", prepared)
  assert builder.info.splits["train"].num_examples == len(TEXTS)
  with pytest.raises(ValueError, match="a TFDS data_dir is required"):
    text_sources.prepare_huggingface_tfds("Tiny/Corpus", "sample-1", "")


def test_pretokenize_packs_a_prepared_tfds_dataset(prepared, tmp_path, capsys):
  info = pretokenize.main(["--tfds_hf=Tiny/Corpus:sample-1", f"--tfds_data_dir={prepared}",
                           "--tfds_split=train[:6]", f"--out={tmp_path / 'train'}",
                           "--seq_len=8", "--eos_id=0"])
  config = configs.base_config()
  config.data.update(source="packed", seq_len=8, train_path=str(tmp_path / "train-*"))
  source = make_source(config.data, split="train", vocab_size=256)
  assert len(source) == info["num_records"]
  records = text_sources.open_prepared("Tiny/Corpus", "sample-1", prepared).as_data_source(
      "train[:6]")
  expected = b"".join(TEXTS[int(records[i]["id"])].encode() + b"\0" for i in range(6))
  stream = unpack(source)
  assert stream == expected[:len(stream)] and len(stream) > len(expected) - 9
  assert info["inputs"][0].startswith("tfds:tiny__corpus/sample_1")
  with pytest.raises(SystemExit):
    pretokenize.main(["--tfds_hf=Tiny/Corpus:sample-1", f"--tfds_data_dir={prepared}",
                      "--tfds_split=test", f"--out={tmp_path / 'x'}", "--seq_len=8"])
  assert "split 'test' is not in the prepared dataset" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    pretokenize.main([f"--out={tmp_path / 'x'}", "--seq_len=8"])
  assert "exactly one of --inputs" in capsys.readouterr().err


def test_training_runs_on_the_hf_tfds_source(prepared, tmp_path):
  from tests.train.tiny_model import build_tiny, tiny_config
  from titans_jax import train

  config = tiny_config(**{"model.vocab_size": 256, "train.steps": 2, "train.eval_every": 2,
                          "train.checkpoint_every": 2})
  config.data.update(hf_config(prepared).data.to_dict())
  result = train.train_and_evaluate(config, str(tmp_path / "work"), model_builder=build_tiny)
  assert result.step == 2
  assert all(np.isfinite(row["loss"]) for row in result.history if "loss" in row)
