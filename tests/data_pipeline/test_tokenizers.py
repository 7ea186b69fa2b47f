"""Tokenizers: byte, SentencePiece and Hugging Face round-trip text; specs resolve or fail
clearly."""

import json

import pytest

from titans_jax.data.tokenizers import (ByteTokenizer, HuggingFaceTokenizer, SentencePieceTokenizer,
                                        Tokenizer, load_tokenizer)

LINES = ["the quick brown fox jumps over the lazy dog",
         "a memory that learns to memorize at test time",
         "question: which answer is right? answer: the second one",
         "surprise drives what the neural memory stores",
         "attention is short-term memory, the neural memory is long-term"] * 4


@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
  import sentencepiece  # a declared dependency: its absence is a failure, not a skip
  folder = tmp_path_factory.mktemp("spm")
  corpus = folder / "corpus.txt"
  corpus.write_text("\n".join(LINES) + "\n")
  prefix = str(folder / "tiny")
  sentencepiece.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=prefix, vocab_size=60, model_type="bpe",
      character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
      minloglevel=2, num_threads=1)
  return prefix + ".model"


@pytest.fixture(scope="module")
def hf_tokenizer_file(tmp_path_factory):
  import tokenizers
  folder = tmp_path_factory.mktemp("hf")
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tokenizer.train_from_iterator(LINES, trainer=trainer)
  path = folder / "tokenizer.json"
  tokenizer.save(str(path))
  return str(path)


def test_byte_tokenizer_is_utf8_bytes():
  tokenizer = ByteTokenizer()
  text = "Titans: mémoire ✓"
  ids = tokenizer.encode(text)
  assert ids == list(text.encode("utf-8"))
  assert tokenizer.decode(ids) == text
  assert (tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id) == (256, None, None)
  assert isinstance(tokenizer, Tokenizer)


def test_byte_tokenizer_special_ids_sit_above_the_bytes():
  tokenizer = ByteTokenizer(bos_id=256, eos_id=257)
  assert tokenizer.vocab_size == 258
  assert tokenizer.decode([256, 104, 105, 257]) == "hi"
  with pytest.raises(ValueError, match="collide with a byte"):
    ByteTokenizer(bos_id=10)


def test_sentencepiece_round_trip(sentencepiece_model):
  tokenizer = load_tokenizer(f"sentencepiece:{sentencepiece_model}")
  assert isinstance(tokenizer, SentencePieceTokenizer)
  assert (tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id) == (60, 1, 2)
  for text in ("the quick brown fox", "memory learns at test time"):
    ids = tokenizer.encode(text)
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.bos_id not in ids  # no special tokens on encode
    assert tokenizer.decode(ids) == text
  assert isinstance(load_tokenizer(sentencepiece_model), SentencePieceTokenizer)  # by extension


def test_huggingface_round_trip(hf_tokenizer_file):
  tokenizer = load_tokenizer(f"hf:{hf_tokenizer_file}")
  assert isinstance(tokenizer, HuggingFaceTokenizer)
  assert tokenizer.bos_id == 1 and tokenizer.eos_id == 2
  for text in ("the quick brown fox", "Question: which one?\nAnswer: the second"):
    ids = tokenizer.encode(text)
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text
  assert isinstance(load_tokenizer(hf_tokenizer_file), HuggingFaceTokenizer)  # by extension


def test_huggingface_reads_special_tokens_from_tokenizer_config(hf_tokenizer_file, tmp_path):
  folder = tmp_path / "with_config"
  folder.mkdir()
  (folder / "tokenizer.json").write_text(open(hf_tokenizer_file).read())
  (folder / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": {"content": "</s>"}, "eos_token": "<s>"}))
  tokenizer = HuggingFaceTokenizer(str(folder / "tokenizer.json"))
  assert (tokenizer.bos_id, tokenizer.eos_id) == (2, 1)


def test_load_tokenizer_errors_name_the_path_and_the_forms(tmp_path):
  with pytest.raises(ValueError, match="does not exist.*'byte'"):
    load_tokenizer(str(tmp_path / "missing.model"))
  with pytest.raises(ValueError, match="missing.json"):
    load_tokenizer(f"hf:{tmp_path / 'missing.json'}")
  with pytest.raises(ValueError, match="is unknown; expected one of"):
    load_tokenizer("gpt2")
  with pytest.raises(ValueError, match="is empty"):
    load_tokenizer("")
  assert isinstance(load_tokenizer("byte"), ByteTokenizer)
