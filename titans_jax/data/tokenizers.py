"""Text <-> token ids: UTF-8 bytes (the project's default), SentencePiece, Hugging Face.

Every tokenizer encodes without special tokens (no BOS, no EOS), as lm-evaluation-harness
encodes prompts for causal models; callers add `bos_id` / `eos_id` where they want them.

    tokenizer = load_tokenizer("byte")                              # vocab 256
    tokenizer = load_tokenizer("sentencepiece:/models/llama2.model")  # e.g. Llama-2, 32K
    tokenizer = load_tokenizer("/models/tokenizer.json")            # extension decides
    ids = tokenizer.encode("Question: why?")
"""

from __future__ import annotations

import json
import os
from typing import Protocol, Sequence, runtime_checkable

SPEC_FORMS = ("'byte'", "'sentencepiece:/path/x.model'", "'hf:/path/tokenizer.json'",
              "a path ending in .model (SentencePiece) or .json (Hugging Face tokenizers)")


@runtime_checkable
class Tokenizer(Protocol):
  vocab_size: int
  bos_id: int | None
  eos_id: int | None

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...


class ByteTokenizer:
  """A token per UTF-8 byte (ids 0..255); optional BOS / EOS ids above the bytes."""

  def __init__(self, bos_id: int | None = None, eos_id: int | None = None):
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
      if value is not None and value < 256:
        raise ValueError(f"ByteTokenizer {name}={value} would collide with a byte (0..255); "
                         "expected None or an id >= 256")
    self.bos_id, self.eos_id = bos_id, eos_id
    self.vocab_size = max([256] + [value + 1 for value in (bos_id, eos_id) if value is not None])

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    # Special ids are not text; a split multi-byte character reads as U+FFFD.
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

  def __repr__(self) -> str:
    return f"ByteTokenizer(bos_id={self.bos_id}, eos_id={self.eos_id})"


def _require_file(path: str, kind: str) -> str:
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ValueError(f"{kind} file {path!r} does not exist; expected one of: "
                     f"{', '.join(SPEC_FORMS)}")
  return path


class SentencePieceTokenizer:
  """A SentencePiece .model file (e.g. the Llama-2 32K tokenizer)."""

  def __init__(self, path: str):
    import sentencepiece  # lazily: only this tokenizer needs it

    self.path = _require_file(path, "SentencePiece model")
    self._processor = sentencepiece.SentencePieceProcessor(model_file=self.path)
    self.vocab_size = int(self._processor.get_piece_size())
    # SentencePiece says -1 for an id the model does not define.
    bos, eos = self._processor.bos_id(), self._processor.eos_id()
    self.bos_id = bos if bos >= 0 else None
    self.eos_id = eos if eos >= 0 else None

  def encode(self, text: str) -> list[int]:
    return list(self._processor.encode(text))

  def decode(self, ids: Sequence[int]) -> str:
    return self._processor.decode([int(i) for i in ids])

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer({self.path!r})"


# Names of BOS / EOS in common tokenizer.json files, for when no tokenizer_config.json says.
_BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>", "[BOS]")
_EOS_NAMES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[EOS]")


class HuggingFaceTokenizer:
  """A Hugging Face `tokenizers` tokenizer.json file.

  BOS / EOS come from the arguments, else from a tokenizer_config.json beside the file
  (as transformers reads it), else from common token names.
  """

  def __init__(self, path: str, bos_token: str | None = None, eos_token: str | None = None):
    import tokenizers  # lazily: only this tokenizer needs it

    self.path = _require_file(path, "Hugging Face tokenizer")
    self._tokenizer = tokenizers.Tokenizer.from_file(self.path)
    self.vocab_size = int(self._tokenizer.get_vocab_size(with_added_tokens=True))
    config = self._config_tokens()
    self.bos_id = self._token_id(bos_token or config.get("bos_token"), _BOS_NAMES)
    self.eos_id = self._token_id(eos_token or config.get("eos_token"), _EOS_NAMES)

  def _config_tokens(self) -> dict:
    path = os.path.join(os.path.dirname(self.path), "tokenizer_config.json")
    if not os.path.isfile(path):
      return {}
    with open(path) as handle:
      config = json.load(handle)
    # transformers writes a special token as a string or as {"content": ...}.
    unwrap = lambda token: token.get("content") if isinstance(token, dict) else token
    return {key: unwrap(config.get(key)) for key in ("bos_token", "eos_token")}

  def _token_id(self, name: str | None, fallbacks: tuple[str, ...]) -> int | None:
    for candidate in ([name] if name else list(fallbacks)):
      token_id = self._tokenizer.token_to_id(candidate)
      if token_id is not None:
        return int(token_id)
    return None

  def encode(self, text: str) -> list[int]:
    return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int]) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

  def __repr__(self) -> str:
    return f"HuggingFaceTokenizer({self.path!r})"


def load_tokenizer(spec: str) -> Tokenizer:
  """'byte', 'sentencepiece:PATH', 'hf:PATH', or a PATH whose extension decides."""
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"tokenizer spec {spec!r} is empty; expected one of: {', '.join(SPEC_FORMS)}")
  spec = spec.strip()
  if spec == "byte":
    return ByteTokenizer()
  kind, sep, rest = spec.partition(":")
  if sep and kind in ("sentencepiece", "spm"):
    return SentencePieceTokenizer(rest)
  if sep and kind in ("hf", "huggingface"):
    return HuggingFaceTokenizer(rest)
  extension = os.path.splitext(spec)[1].lower()
  if extension == ".model":
    return SentencePieceTokenizer(spec)
  if extension == ".json":
    return HuggingFaceTokenizer(spec)
  raise ValueError(f"tokenizer spec {spec!r} is unknown; expected one of: {', '.join(SPEC_FORMS)}")
