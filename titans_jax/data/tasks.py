"""Synthetic long-context recall tasks as random-access Grain sources.

S-NIAH (RULER's single needle in a haystack, the Titans paper's S-NIAH-PK/-N/-W):
one needle sentence hidden in a byte-level haystack, then a question whose answer
the model must copy from the needle. MQAR (multi-query associative recall, as in
Zoology/Based): key-value token pairs early, queries of those keys late.

Every record is a pure function of (seed, index), like RandomTokenSource, and
`__getitem__` gives the usual example dict (inputs/targets/weights); the loss
weight is 1 only on targets that are answer tokens. `sample(index)` adds the
metadata an evaluation harness needs (answer, positions, depth).
"""

from __future__ import annotations

import functools
import uuid

import numpy as np

from titans_jax.data.sources import BYTE_VOCAB_SIZE, example_from_tokens

NIAH_TASKS = ("passkey", "number", "uuid")
HAYSTACKS = ("noise", "essay")
MQAR_FILLERS = ("zeros", "random")

# RULER's "noise" haystack: one paragraph repeated. A leading space per sentence
# lets sentences, needle and question concatenate into plain text.
_NOISE = (" The grass is green.", " The sky is blue.", " The sun is yellow.", " Here we go.",
          " There and back again.")

# Words of the generated "essay" haystack and of the needle keys ("adjective-noun").
_ADJECTIVES = ("quiet", "bright", "ancient", "curious", "gentle", "hollow", "silver", "restless",
               "patient", "distant", "narrow", "golden", "humble", "crooked", "steady", "vivid",
               "fragile", "stubborn", "careful", "sudden", "plain", "wild", "heavy", "clever")
_NOUNS = ("river", "lantern", "garden", "harbor", "engine", "letter", "mountain", "violin",
          "market", "window", "forest", "teacher", "bridge", "compass", "orchard", "village",
          "museum", "kettle", "ladder", "painter", "island", "library", "meadow", "sailor")
_VERBS = ("crossed", "remembered", "painted", "followed", "repaired", "described", "carried",
          "watched", "ignored", "measured", "praised", "visited", "explained", "found")
_PLACES = ("old town", "valley", "workshop", "north road", "quiet square", "train station",
           "small school", "open field", "city hall", "back room")
_TIMES = ("morning", "evening", "winter", "midnight", "spring", "the next day", "noon")
_TEMPLATES = (
    " The {adj} {noun} {verb} the {noun2} near the {place}.",
    " Every {noun} in the {place} seemed {adj} that {time}.",
    " We {verb} a {adj} {noun} and kept walking.",
    " Nobody expected the {noun} to be so {adj}.",
    " In the {place}, a {noun} {verb} the {adj2} {noun2}.",
    " It is {adj} to think that one {noun} could change the {noun2}.",
    " Later that {time}, the {noun} {verb} the {place} once more.",
    " She wrote about the {adj} {noun} for a long time.",
    " A {adj} idea is worth more than a {adj2} {noun}.",
    " By {time}, the {place} was {adj} again.",
    " He asked whether the {noun} had {verb} the {noun2}.",
    " Most of the {noun}s were {adj}, and some were {adj2}.",
)
_ESSAY_POOL_SIZE = 4096
_ESSAY_POOL_SEED = 20241231  # fixed: the pool is part of the task, not of the data seed


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
  return words[int(rng.integers(len(words)))]


def _essay_sentence(rng: np.random.Generator) -> str:
  return _pick(rng, _TEMPLATES).format(
      adj=_pick(rng, _ADJECTIVES), adj2=_pick(rng, _ADJECTIVES), noun=_pick(rng, _NOUNS),
      noun2=_pick(rng, _NOUNS), verb=_pick(rng, _VERBS), place=_pick(rng, _PLACES),
      time=_pick(rng, _TIMES))


@functools.lru_cache(maxsize=None)
def _sentence_pool(haystack: str) -> tuple[tuple[bytes, ...], np.ndarray]:
  """The haystack's sentences and their byte lengths, built once per process.

  Essays draw from a fixed pool so that a long haystack is a cheap join of
  pre-encoded sentences instead of thousands of string formats per example.
  """
  if haystack == "noise":
    sentences = tuple(s.encode() for s in _NOISE)
  else:
    rng = np.random.default_rng(_ESSAY_POOL_SEED)
    sentences = tuple(_essay_sentence(rng).encode() for _ in range(_ESSAY_POOL_SIZE))
  return sentences, np.array([len(s) for s in sentences], np.int64)


def max_sentence_len(haystack: str) -> int:
  """Longest haystack sentence in bytes: the needle lands within this of its depth."""
  return int(_sentence_pool(haystack)[1].max())


def _haystack(haystack: str, length: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
  """`length` bytes of haystack and the offsets where the needle may go.

  Offsets are sentence starts plus the end; the last sentence may be cut short.
  """
  sentences, lengths = _sentence_pool(haystack)
  count = length // int(lengths.min()) + 1  # enough even if every sentence were the shortest
  if haystack == "noise":
    ids = np.arange(count) % len(sentences)
  else:
    ids = rng.integers(0, len(sentences), count)
  ends = np.cumsum(lengths[ids])
  used = int(np.searchsorted(ends, length)) + 1  # sentences up to the first reaching `length`
  text = b"".join(sentences[i] for i in ids[:used])[:length]
  return text, np.concatenate([[0], ends[:used - 1], [length]])


def _needle_and_question(task: str, key: str, value: str) -> tuple[bytes, bytes]:
  if task == "passkey":
    needle = f" The pass key is {value}. Remember it. {value} is the pass key."
    question = " What is the pass key? The pass key is "
  else:
    kind = "number" if task == "number" else "uuid"
    needle = f" One of the special magic {kind}s for {key} is: {value}."
    question = (f" What is the special magic {kind} for {key} mentioned in the provided text?"
                f" The special magic {kind} for {key} mentioned in the provided text is: ")
  return needle.encode(), question.encode()


def _draw_key_and_value(task: str, rng: np.random.Generator) -> tuple[str, str]:
  # The key is drawn for every task so all tasks consume the stream alike.
  key = f"{_pick(rng, _ADJECTIVES)}-{_pick(rng, _NOUNS)}"
  if task == "uuid":
    return key, str(uuid.UUID(bytes=rng.bytes(16), version=4))
  return ("" if task == "passkey" else key), str(int(rng.integers(10**6, 10**7)))  # 7 digits


def _longest_key_and_value(task: str) -> tuple[str, str]:
  key = max(_ADJECTIVES, key=len) + "-" + max(_NOUNS, key=len)
  value = str(uuid.UUID(int=0)) if task == "uuid" else "9" * 7
  return ("" if task == "passkey" else key), value


def _require_choice(name: str, value, choices: tuple[str, ...]):
  if value not in choices:
    raise ValueError(f"{name}={value!r} is unknown; expected one of {choices}")


class NeedleInHaystackSource:
  """S-NIAH: a needle at `depth` in a haystack, then the question and its answer.

  task: "passkey" (PK), "number" (N: a 7-digit number keyed by a word) or "uuid"
  (W: a uuid keyed by a word). haystack: "noise" (RULER's repeated paragraph) or
  "essay" (varied generated sentences). depth: fraction of the haystack before the
  needle, snapped to a sentence start; None draws one per example. The token
  stream (bytes) is haystack-with-needle + question + answer, seq_len + 1 long.
  """

  def __init__(self, *, seq_len: int, task: str = "passkey", haystack: str = "noise",
               depth: float | None = None, num_records: int = 1 << 30, seed: int = 0):
    _require_choice("task", task, NIAH_TASKS)
    _require_choice("haystack", haystack, HAYSTACKS)
    if depth is not None and not 0.0 <= depth <= 1.0:
      raise ValueError(f"depth={depth} must lie in [0, 1] (or be None for a random depth)")
    if seq_len < self.min_seq_len(task):
      raise ValueError(f"seq_len={seq_len} is too short for S-NIAH task {task!r}: needle, question "
                       f"and answer need seq_len >= {self.min_seq_len(task)}")
    self.seq_len, self.task, self.haystack, self.depth = seq_len, task, haystack, depth
    self.num_records, self.seed = num_records, seed
    self.vocab_size = BYTE_VOCAB_SIZE

  @staticmethod
  def min_seq_len(task: str) -> int:
    """Shortest seq_len that holds needle + question + answer for every key (no haystack)."""
    _require_choice("task", task, NIAH_TASKS)
    key, value = _longest_key_and_value(task)
    needle, question = _needle_and_question(task, key, value)
    return len(needle) + len(question) + len(value) - 1

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict:
    example = self.sample(index)
    return {name: example[name] for name in ("inputs", "targets", "weights")}

  def sample(self, index: int) -> dict:
    """The example plus: answer (bytes), key (bytes, b"" for passkey), depth (the one
    asked for or drawn), needle_start / needle_end / answer_start (offsets in the token
    stream, equal to indices in inputs; the first weighted target is answer_start - 1)."""
    rng = np.random.default_rng([self.seed, int(index)])
    key, value = _draw_key_and_value(self.task, rng)
    drawn_depth = float(rng.random())  # drawn always: a fixed depth leaves the rest unchanged
    depth = drawn_depth if self.depth is None else float(self.depth)
    needle, question = _needle_and_question(self.task, key, value)
    answer = value.encode()
    haystack_len = self.seq_len + 1 - len(needle) - len(question) - len(answer)
    text, offsets = _haystack(self.haystack, haystack_len, rng)
    needle_start = int(offsets[np.argmin(np.abs(offsets - depth * haystack_len))])
    stream = text[:needle_start] + needle + text[needle_start:] + question + answer
    answer_start = len(stream) - len(answer)
    weights = np.zeros((self.seq_len,), np.float32)
    weights[answer_start - 1:] = 1.0  # target t predicts stream[t + 1]
    tokens = np.frombuffer(stream, np.uint8).astype(np.int32)
    return {**example_from_tokens(tokens, weights), "answer": answer, "key": key.encode(),
            "depth": depth, "needle_start": needle_start, "needle_end": needle_start + len(needle),
            "answer_start": answer_start}


class MqarSource:
  """MQAR: `num_pairs` key-value pairs, filler, then `num_queries` keys each followed by its value.

  Tokens: 0 is the "zeros" filler, keys come from 1..K and values from K+1..vocab_size-1
  with K = (vocab_size - 1) // 2. Keys are distinct, so each query has one answer;
  "random" filler draws value tokens, so a key token only ever appears in its pair or
  its query. The queries (distinct keys, random order) end the sequence, so the gap
  between a pair and its query grows with seq_len. Loss only on the queried values.
  """

  def __init__(self, *, seq_len: int, num_pairs: int = 8, num_queries: int | None = None,
               vocab_size: int = BYTE_VOCAB_SIZE, filler: str = "random",
               num_records: int = 1 << 30, seed: int = 0):
    num_queries = num_pairs if num_queries is None else num_queries
    _require_choice("filler", filler, MQAR_FILLERS)
    if num_pairs < 1 or not 1 <= num_queries <= num_pairs:
      raise ValueError(f"MQAR needs num_pairs >= 1 and 1 <= num_queries <= num_pairs, got "
                       f"num_pairs={num_pairs}, num_queries={num_queries}")
    if vocab_size < 2 * num_pairs + 1:
      raise ValueError(f"vocab_size={vocab_size} is too small for {num_pairs} MQAR pairs: distinct "
                       f"keys and a separate value range need vocab_size >= {2 * num_pairs + 1}")
    if seq_len < 2 * (num_pairs + num_queries) - 1:
      raise ValueError(f"seq_len={seq_len} is too short for {num_pairs} MQAR pairs and "
                       f"{num_queries} queries; expected seq_len >= "
                       f"{2 * (num_pairs + num_queries) - 1}")
    self.seq_len, self.num_pairs, self.num_queries = seq_len, num_pairs, num_queries
    self.vocab_size, self.filler, self.num_records, self.seed = vocab_size, filler, num_records, seed
    self.num_keys = (vocab_size - 1) // 2

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict:
    example = self.sample(index)
    return {name: example[name] for name in ("inputs", "targets", "weights")}

  def sample(self, index: int) -> dict:
    """The example plus keys / values [num_pairs], query_keys / query_values [num_queries]
    and query_positions: the weighted target indices (target = the query's value)."""
    rng = np.random.default_rng([self.seed, int(index)])
    keys = rng.permutation(self.num_keys)[:self.num_pairs] + 1
    values = rng.integers(self.num_keys + 1, self.vocab_size, self.num_pairs)
    queried = rng.permutation(self.num_pairs)[:self.num_queries]
    filler_len = self.seq_len + 1 - 2 * (self.num_pairs + self.num_queries)
    if self.filler == "zeros":
      filler = np.zeros((filler_len,), np.int64)
    else:
      filler = rng.integers(self.num_keys + 1, self.vocab_size, filler_len)
    pairs = np.stack([keys, values], axis=1).reshape(-1)
    queries = np.stack([keys[queried], values[queried]], axis=1).reshape(-1)
    tokens = np.concatenate([pairs, filler, queries])
    # Target t predicts tokens[t + 1]: the query keys' positions predict their values.
    query_positions = self.seq_len + 1 - 2 * self.num_queries + 2 * np.arange(self.num_queries)
    weights = np.zeros((self.seq_len,), np.float32)
    weights[query_positions] = 1.0
    return {**example_from_tokens(tokens, weights), "keys": keys, "values": values,
            "query_keys": keys[queried], "query_values": values[queried],
            "query_positions": query_positions}
