"""RULER's single-needle tasks (S-NIAH), as the Titans paper's Table 2 reports them.

    task           Table 2     haystack                       needle value
    niah_single_1  S-NIAH-1    noise (one paragraph repeated)  a 7-digit number ("PK")
    niah_single_2  S-NIAH-2    essay (a text file you give)    a 7-digit number ("N")
    niah_single_3  S-NIAH-3    essay                           a uuid ("W")

Every sample follows RULER (NVIDIA/RULER, scripts/data/synthetic/niah.py with the
`niah` entry of constants.py and synthetic.yaml):
- the template, the answer prefix and the needle are RULER's strings, made singular
  the way RULER does for one needle and one query ("Some ... are" -> "A ... is");
- the key is a word ("adjective-noun"); the value a 7-digit number or a uuid4;
- the haystack is sized in the model's tokenizer: the most haystack units (noise
  repeats, essay words) whose whole prompt (template + context + answer prefix), plus
  the tokens to generate, fits the length; found by exponential + binary search;
- an essay shorter than that is repeated (RULER: "Repeat haystack as many times as
  needed"); the needle goes between sentences at `depth` x the number of sentences
  (between noise repeats for the noise haystack);
- scoring is RULER's string_match_all on the greedy continuation of the answer prefix:
  1 when the answer occurs in it (case-insensitive), x100 per task and length.

Two deviations, both for running without RULER's dependencies: sentences are split by
a regular expression (end punctuation, then whitespace) instead of NLTK's punkt, and
the depths are given (evenly spread over the samples by default) instead of drawn
from RULER's 40 depths.

    python -m titans_jax.evaluation.ruler --workdir=W --tasks=niah_single_1,niah_single_2,niah_single_3 \\
        --lengths=2048,4096,8192,16384 --samples=50 --essay_path=essays.txt --tokenizer=byte \\
        --out=W/ruler.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
import uuid

import jax
import jax.numpy as jnp
import numpy as np

from titans_jax import generate
from titans_jax.data.tokenizers import Tokenizer, load_tokenizer

# RULER's niah strings (constants.py, niah.py), before the singular rewrite below.
TEMPLATE = ("Some special magic {type_needle_v} are hidden within the following text. Make sure to "
            "memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
            "What are all the special magic {type_needle_v} for {query} mentioned in the provided "
            "text?")
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  haystack: str  # "noise" | "essay"
  values: str  # RULER's type_needle_v: "numbers" | "uuids"
  column: str  # Table 2's name


TASKS = {
    "niah_single_1": TaskSpec("noise", "numbers", "S-NIAH-1 (PK)"),
    "niah_single_2": TaskSpec("essay", "numbers", "S-NIAH-2 (N)"),
    "niah_single_3": TaskSpec("essay", "uuids", "S-NIAH-3 (W)"),
}
DEFAULT_LENGTHS = (2048, 4096, 8192, 16384)
# Tokens generated after the answer prefix: " 1234567." is 9 bytes, a uuid 37.
DEFAULT_MAX_NEW_TOKENS = {"numbers": 12, "uuids": 40}

# Needle keys are "adjective-noun" words, as RULER draws them from wonderwords' lists.
_ADJECTIVES = ("abundant", "adorable", "agreeable", "ancient", "bitter", "brave", "breezy", "calm",
               "careful", "cheerful", "clever", "crooked", "curious", "damp", "delightful", "eager",
               "elegant", "faithful", "fancy", "fierce", "gentle", "gigantic", "glorious", "grumpy",
               "handsome", "helpful", "hollow", "humble", "jolly", "kind", "lively", "lucky",
               "mysterious", "nervous", "obedient", "plain", "polite", "proud", "quiet", "rapid",
               "restless", "shiny", "silly", "steady", "swift", "tender", "vast", "witty")
_NOUNS = ("apple", "bakery", "balloon", "bicycle", "blanket", "bridge", "cabinet", "candle",
          "canyon", "carpet", "castle", "cellar", "compass", "cottage", "desert", "dolphin",
          "engine", "feather", "forest", "garden", "glacier", "harbor", "helmet", "hospital",
          "island", "jacket", "kettle", "ladder", "lantern", "library", "meadow", "mirror",
          "museum", "notebook", "orchard", "painter", "pillow", "planet", "pocket", "river",
          "saddle", "sailor", "teacher", "temple", "tunnel", "valley", "violin", "window")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")


def canonical_task(name: str) -> str:
  name = name.strip().lower()
  if name not in TASKS:
    raise ValueError(f"RULER task {name!r} is unknown; expected one of {tuple(TASKS)}")
  return name


def singular(template: str) -> str:
  """RULER's rewrite of its plural strings for one needle and one query, in its order."""
  for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
    template = template.replace(old, new)
  return template


def prompt_text(task: str, context: str, key: str) -> str:
  """The model's whole input: RULER's template with the answer prefix appended."""
  values = TASKS[task].values
  return singular(TEMPLATE + ANSWER_PREFIX).format(type_needle_v=values[:-1], context=context,
                                                   query=key)


def needle_text(task: str, key: str, value: str) -> str:
  # RULER formats the needle with the plural type ("One of the special magic numbers ...").
  return NEEDLE.format(type_needle_v=TASKS[task].values, key=key, value=value)


def essay_words(text: str) -> list[str]:
  """RULER's essay haystack: whitespace runs made one space, split into words."""
  return re.sub(r"\s+", " ", text).strip().split(" ") if text and text.strip() else []


def split_sentences(text: str) -> list[str]:
  """Sentences of `text` (a regular-expression stand-in for NLTK's sent_tokenize)."""
  return [sentence for sentence in _SENTENCE_END.split(text.strip()) if sentence]


def build_context(task: str, units: int, needle: str, depth: float,
                  words: list[str] | None = None) -> str:
  """`units` haystack units (noise repeats or essay words) with the needle at `depth`."""
  if TASKS[task].haystack == "noise":
    # RULER: the paragraph `units` times, the needle inserted among them, "\n"-joined.
    sentences = [NOISE] * units
    sentences.insert(int(units * depth), needle)
    return "\n".join(sentences)
  repeats = -(-units // len(words)) if units else 0  # RULER repeats an essay that is too short
  sentences = split_sentences(" ".join((words * repeats)[:units]))
  at = int(len(sentences) * depth)
  # RULER joins [before, needle, after] with spaces, empty parts included.
  return " ".join([" ".join(sentences[:at]), needle, " ".join(sentences[at:])])


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
  """Token ids the model is fed: BOS first when the tokenizer has one (as packed training
  data starts documents), then the text without special tokens."""
  bos = [int(tokenizer.bos_id)] if tokenizer.bos_id is not None else []
  return bos + list(tokenizer.encode(text))


def draw_key_value(task: str, rng: np.random.Generator) -> tuple[str, str]:
  key = f"{_ADJECTIVES[rng.integers(len(_ADJECTIVES))]}-{_NOUNS[rng.integers(len(_NOUNS))]}"
  if TASKS[task].values == "uuids":
    return key, str(uuid.UUID(int=int.from_bytes(rng.bytes(16), "big"), version=4))
  return key, str(int(rng.integers(10**6, 10**7)))  # RULER: 7 digits


@dataclasses.dataclass
class RulerSample:
  task: str
  length: int
  index: int
  depth: float  # fraction of the haystack before the needle, as asked
  key: str
  answer: str
  needle: str
  context: str
  prompt: str
  tokens: list  # encode_prompt(prompt)
  haystack_units: int  # noise repeats or essay words (more than the essay has: repeated)
  max_new_tokens: int


def _largest_fitting(fits, start: int = 1) -> int:
  """Largest n >= 0 with fits(n), for fits monotone decreasing and fits(0) true."""
  low, high = 0, max(1, start)
  while fits(high):  # exponential search for a bound, then bisection
    low, high = high, 2 * high
  while high - low > 1:
    middle = (low + high) // 2
    low, high = (middle, high) if fits(middle) else (low, middle)
  return low


def make_sample(task: str, length: int, tokenizer: Tokenizer, *, index: int = 0, seed: int = 0,
                depth: float = 0.5, essay: list[str] | None = None,
                max_new_tokens: int | None = None) -> RulerSample:
  """One sample: its prompt fills `length` tokens (with max_new_tokens to generate) as
  fully as whole haystack units allow. Raises ValueError when nothing fits."""
  task = canonical_task(task)
  spec = TASKS[task]
  if spec.haystack == "essay" and not essay:
    raise ValueError(f"task {task!r} needs an essay haystack; pass essay words "
                     "(ruler.essay_words(text)) or --essay_path=FILE (a plain text file)")
  new_tokens = DEFAULT_MAX_NEW_TOKENS[spec.values] if max_new_tokens is None else max_new_tokens
  rng = np.random.default_rng([seed, list(TASKS).index(task), length, index])
  key, value = draw_key_value(task, rng)
  needle = needle_text(task, key, value)
  build = lambda units: prompt_text(task, build_context(task, units, needle, depth, essay), key)
  size = lambda units: len(encode_prompt(tokenizer, build(units))) + new_tokens
  if size(0) > length:
    raise ValueError(f"length {length} cannot hold task {task!r}: its template, needle and answer "
                     f"prefix with no haystack plus {new_tokens} tokens to generate take {size(0)} "
                     f"tokens in this tokenizer; expected lengths >= {size(0)}")
  # A first guess from the bytes a unit adds keeps the search short at long lengths.
  unit_bytes = len(NOISE) + 1 if spec.haystack == "noise" else 6
  units = _largest_fitting(lambda n: size(n) <= length, start=max(1, length // unit_bytes // 4))
  prompt = build(units)
  return RulerSample(task=task, length=length, index=index, depth=depth, key=key, answer=value,
                     needle=needle, context=build_context(task, units, needle, depth, essay),
                     prompt=prompt, tokens=encode_prompt(tokenizer, prompt), haystack_units=units,
                     max_new_tokens=new_tokens)


# -- scoring (RULER's scripts/eval/synthetic/constants.py) -----------------------------------

def postprocess_pred(text: str) -> str:
  """RULER: strip, control characters become newlines, strip again."""
  return re.sub(r"[\x00-\x1f]", "\n", text.strip()).strip()


def string_match_all(predictions: list[str], references: list[list[str]]) -> float:
  """RULER's metric: per sample the fraction of its answers contained in the prediction
  (case-insensitive), averaged over samples, x100."""
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"string_match_all needs one reference list per prediction; got "
                     f"{len(predictions)} predictions and {len(references)} reference lists")
  per_sample = [sum(answer.lower() in prediction.lower() for answer in answers) / len(answers)
                for prediction, answers in zip(predictions, references)]
  return 100.0 * float(np.mean(per_sample))


# -- decoding ------------------------------------------------------------------------------

def _strong(cache):
  """Every leaf a strongly typed array (Python-int positions included): one compile."""
  return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), cache)


class PiecewiseDecoder(generate.Decoder):
  """generate.Decoder whose prefill streams the prompt in pieces of piece_len, then the
  rest in power-of-two pieces, with the state carried (as the model streams any
  context). Prompts of every length then share about log2(piece_len) + 1 compiled
  prefill programs instead of one each; full attention's cache slots are rounded up to
  a multiple of piece_len so its decoding step recompiles rarely too. Results equal
  the one-piece prefill (models are causal and carry their whole state)."""

  def __init__(self, model, piece_len: int = 256):
    if int(piece_len) < 1:
      raise ValueError(f"piece_len={piece_len}; expected >= 1 token per prefill piece")
    super().__init__(model)
    self.piece_len = int(piece_len)

  def init_cache(self, batch_size: int, max_length: int = 0):
    rounded = -(-int(max_length) // self.piece_len) * self.piece_len
    return super().init_cache(batch_size, rounded)

  def pieces(self, length: int) -> list[tuple[int, int]]:
    """(start, size) of the prefill pieces of a prompt of `length` tokens."""
    whole = length - length % self.piece_len
    spans = [(start, self.piece_len) for start in range(0, whole, self.piece_len)]
    size, start = 1 << max(self.piece_len.bit_length() - 1, 0), whole
    while start < length:
      if size <= length - start:
        spans.append((start, size))
        start += size
      size //= 2
    return spans

  def prefill(self, tokens, cache):
    tokens = np.asarray(tokens)
    if self.model.config.variant == "mac":
      # MAC's segment bookkeeping needs Python-int positions: eager pieces (generate.Decoder).
      for start in range(0, tokens.shape[1], self.piece_len):
        logits, cache = self.model.stream(jnp.asarray(tokens[:, start:start + self.piece_len]),
                                          cache)
      return logits, _strong(cache)
    cache = _strong(cache)
    for start, size in self.pieces(tokens.shape[1]):
      logits, cache = self._prefill(self.state, jnp.asarray(tokens[:, start:start + size]), cache)
    return logits, cache


def greedy_text(model, tokenizer: Tokenizer, tokens: list[int], max_new_tokens: int,
                decoder: generate.Decoder | None = None) -> str:
  """The greedy continuation of `tokens` as text, cut at the tokenizer's EOS."""
  new = generate.generate(model, np.asarray(tokens, np.int32), max_new_tokens, temperature=0.0,
                          eos_id=tokenizer.eos_id, decoder=decoder)
  new = [int(t) for t in np.asarray(new).reshape(-1)]
  if tokenizer.eos_id is not None and tokenizer.eos_id in new:
    new = new[:new.index(tokenizer.eos_id)]
  return tokenizer.decode(new)


# -- the harness ---------------------------------------------------------------------------

@dataclasses.dataclass
class RulerResult:
  name: str
  tasks: list
  lengths: list
  samples: int
  scores: dict  # {task: {str(length): string_match_all score, 0..100}}
  records: list  # one dict per sample: task, length, index, depth, key, answer, prediction, ...
  seconds: float

  def score(self, task: str, length: int) -> float | None:
    return self.scores.get(task, {}).get(str(length))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def check_arguments(tasks, lengths, samples, depths=None, max_new_tokens=None, essay_text=None):
  """(tasks, lengths) canonical; a ValueError for anything that cannot run."""
  tasks = [canonical_task(task) for task in tasks]
  if not tasks:
    raise ValueError(f"no RULER task given; expected some of {tuple(TASKS)}")
  lengths = [int(n) for n in lengths]
  if not lengths or min(lengths) < 1:
    raise ValueError(f"lengths={lengths}; expected context lengths in tokens, each >= 1")
  if int(samples) < 1:
    raise ValueError(f"samples={samples}; expected >= 1 sample per task and length")
  if depths is not None and (not len(depths) or not all(0.0 <= float(d) <= 1.0 for d in depths)):
    raise ValueError(f"depths={depths}; expected needle depths in [0, 1] (or None: evenly spread)")
  if max_new_tokens is not None and int(max_new_tokens) < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens}; expected >= 1 (or None: 12 for numbers, "
                     "40 for uuids)")
  essay_tasks = [task for task in tasks if TASKS[task].haystack == "essay"]
  if essay_tasks and not essay_words(essay_text or ""):
    raise ValueError(f"tasks {essay_tasks} hide the needle in an essay, but no essay text was "
                     "given; pass essay_text (--essay_path=FILE, a plain text file such as Paul "
                     "Graham's essays, as RULER uses) or run niah_single_1 only")
  return tasks, lengths


def check_vocabulary(model, tokenizer: Tokenizer) -> None:
  model_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
  if model_vocab is not None and tokenizer.vocab_size > model_vocab:
    raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is "
                     f"{model_vocab}; expected the tokenizer the model was trained with")


def sample_depths(samples: int, depths=None) -> list[float]:
  """Depth of each sample: `depths` in turn, or evenly spread over [0, 1] (RULER spreads
  needles over 40 evenly spaced depths)."""
  if depths is None:
    return [0.5] if samples == 1 else [float(d) for d in np.linspace(0.0, 1.0, samples)]
  return [float(depths[i % len(depths)]) for i in range(samples)]


def build_samples(tokenizer: Tokenizer, tasks, lengths, samples: int, essay_text: str | None = None,
                  *, depths=None, seed: int = 0, max_new_tokens: int | None = None) -> dict:
  """{(task, length): [RulerSample]}; every length and essay problem raises here, before
  any model work."""
  words = essay_words(essay_text or "")
  built = {}
  for task in tasks:
    for length in lengths:
      built[task, length] = [
          make_sample(task, length, tokenizer, index=i, seed=seed, depth=depth, essay=words,
                      max_new_tokens=max_new_tokens)
          for i, depth in enumerate(sample_depths(samples, depths))]
  return built


def evaluate_ruler(model, tokenizer: Tokenizer, tasks=tuple(TASKS), lengths=DEFAULT_LENGTHS,
                   samples: int = 10, essay_text: str | None = None, *, depths=None, seed: int = 0,
                   max_new_tokens: int | None = None, piece_len: int = 256, name: str = "model",
                   progress: bool = True) -> RulerResult:
  """RULER S-NIAH scores of `model` (a zoo LM) per task and length, greedy decoding.

  essay_text: the essay haystack of niah_single_2 / 3 (repeated when too short).
  depths: needle depths the samples take in turn (default: evenly spread).
  max_new_tokens: tokens generated per sample (default 12 for numbers, 40 for uuids);
  they count in the length, as RULER's tokens_to_generate do.
  """
  tasks, lengths = check_arguments(tasks, lengths, samples, depths, max_new_tokens, essay_text)
  check_vocabulary(model, tokenizer)
  built = build_samples(tokenizer, tasks, lengths, int(samples), essay_text, depths=depths,
                        seed=seed, max_new_tokens=max_new_tokens)
  decoder = PiecewiseDecoder(model, piece_len)
  started, scores, records = time.time(), {task: {} for task in tasks}, []
  for (task, length), cell in built.items():
    predictions = []
    for sample in cell:
      text = greedy_text(model, tokenizer, sample.tokens, sample.max_new_tokens, decoder)
      predictions.append(postprocess_pred(text))
      records.append({"task": task, "length": length, "index": sample.index, "depth": sample.depth,
                      "key": sample.key, "answer": sample.answer, "prediction": predictions[-1],
                      "score": string_match_all(predictions[-1:], [[sample.answer]]),
                      "prompt_tokens": len(sample.tokens),
                      "haystack_units": sample.haystack_units})
    scores[task][str(length)] = string_match_all(predictions, [[s.answer] for s in cell])
    if progress:
      print(f"  ruler {task} length {length}: {scores[task][str(length)]:.1f} "
            f"({len(cell)} samples, {time.time() - started:.0f}s)", file=sys.stderr, flush=True)
  return RulerResult(name=name, tasks=tasks, lengths=lengths, samples=int(samples), scores=scores,
                     records=records, seconds=time.time() - started)


def length_label(length: int) -> str:
  return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def format_table2(results) -> str:
  """Table 2's layout: a row per result (model), a column group per S-NIAH task, a
  column per length; '-' where a cell was not run."""
  results = [results] if isinstance(results, RulerResult) else list(results)
  tasks = [task for task in TASKS if any(task in r.tasks for r in results)]
  lengths = sorted({length for r in results for length in r.lengths})
  cell = 7
  group = max([cell * len(lengths)] + [len(TASKS[t].column) for t in tasks])
  width = max([5] + [len(r.name) for r in results])
  row = lambda name, groups: f"{name:<{width}} | " + " | ".join(f"{g:>{group}}" for g in groups)
  lines = [(f"{'':<{width}} | " + " | ".join(f"{TASKS[t].column:^{group}}" for t in tasks)).rstrip(),
           row("Model", ["".join(f"{length_label(n):>{cell}}" for n in lengths)] * len(tasks))]
  lines.append("-" * len(lines[-1]))
  for result in results:
    groups = []
    for task in tasks:
      values = [result.score(task, n) for n in lengths]
      groups.append("".join(f"{'-' if v is None else format(v, '.1f'):>{cell}}" for v in values))
    lines.append(row(result.name, groups))
  return "\n".join(lines)


def write_json(result: RulerResult, path: str, **extra) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as handle:
    json.dump({**extra, **result.to_json(), "table": format_table2(result)}, handle, indent=2)
  return path


def _parse_list(text: str, kind):
  return [kind(item) for item in text.split(",") if item.strip()]


def read_essay(path: str) -> str:
  if not os.path.isfile(path):
    raise ValueError(f"--essay_path={path!r} does not exist; expected a plain text file "
                     "(e.g. Paul Graham's essays, RULER's essay haystack)")
  with open(path, encoding="utf-8", errors="replace") as handle:
    return handle.read()


def main(argv=None):
  import argparse

  from titans_jax import train

  parser = argparse.ArgumentParser(description="RULER S-NIAH (Titans Table 2) of a workdir's "
                                   "checkpoint.")
  parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
  parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated RULER tasks")
  parser.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)),
                      help="context lengths in tokens, comma-separated")
  parser.add_argument("--samples", type=int, default=10, help="samples per task and length")
  parser.add_argument("--essay_path", default="", help="plain text file: the essay haystack of "
                      "niah_single_2 / niah_single_3")
  parser.add_argument("--tokenizer", default="", help="byte | sentencepiece:PATH | hf:PATH | PATH "
                      "(default: the run's data.tokenizer, else byte)")
  parser.add_argument("--depths", default="", help="needle depths in [0, 1] the samples take in "
                      "turn (default: evenly spread)")
  parser.add_argument("--max_new_tokens", type=int, default=0,
                      help="tokens to generate (default: 12 for numbers, 40 for uuids)")
  parser.add_argument("--piece_len", type=int, default=0,
                      help="prefill piece length (default: the run's data.seq_len)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--out", default="", help="JSON path (default: WORKDIR/ruler.json)")
  args = parser.parse_args(argv)
  try:  # everything that can be wrong with the arguments fails before the checkpoint loads
    tasks = [canonical_task(task) for task in args.tasks.split(",") if task.strip()]
    essay = read_essay(args.essay_path) if args.essay_path else None
    lengths = _parse_list(args.lengths, int)
    depths = _parse_list(args.depths, float) or None
    check_arguments(tasks, lengths, args.samples, depths, args.max_new_tokens or None, essay)
  except ValueError as error:
    parser.error(str(error))
  model, config, step = train.load_model(args.workdir, args.step)
  tokenizer_spec = args.tokenizer or config.data.get("tokenizer", "") or "byte"
  result = evaluate_ruler(model, load_tokenizer(tokenizer_spec), tasks, lengths, args.samples,
                          essay, depths=depths, seed=args.seed,
                          max_new_tokens=args.max_new_tokens or None,
                          piece_len=args.piece_len or int(config.data.seq_len),
                          name=f"{config.model.variant}@{step}")
  print(format_table2(result))
  out = write_json(result, args.out or os.path.join(args.workdir, "ruler.json"),
                   workdir=args.workdir, step=step, tokenizer=tokenizer_spec)
  print(f"Results: {out}")


if __name__ == "__main__":
  main()
