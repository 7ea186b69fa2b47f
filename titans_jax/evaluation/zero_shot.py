"""Zero-shot language modelling and common-sense reasoning (Titans Table 1), scored as
lm-evaluation-harness 0.4.x scores them.

Prompts, continuations and metrics follow lm-eval's task definitions; the model sees
the tokens lm-eval's causal-LM wrapper would give it: no BOS on prompts, the context and
continuation encoded together and split at the context's length, inputs cut to the last
max_length tokens, wikitext scored in lm-eval's rolling windows.

    tasks | metrics (lm-eval)            | docs (Hugging Face field names, one JSON per line)
    wikitext        word/byte perplexity, bits_per_byte | page (wikitext_document_level)
    lambada_openai  perplexity, acc      | text
    piqa            acc, acc_norm        | goal, sol1, sol2, label
    hellaswag       acc, acc_norm        | activity_label, ctx_a, ctx_b, endings, label
    winogrande      acc                  | sentence, option1, option2, answer ("1" | "2")
    arc_easy / arc_challenge  acc, acc_norm | question, choices {text, label}, answerKey
    social_iqa      acc                  | context, question, answerA/B/C, label ("1".."3")
    boolq           acc                  | passage, question, label (super_glue)

    python -m titans_jax.evaluation.zero_shot --workdir=/tmp/run --data_dir=/data/zero_shot \\
        --tasks=wikitext,lambada_openai,piqa,hellaswag --tokenizer=byte --out=/tmp/run/zs.json

The CLI prints Table 1's row and Table 5's columns (ppl, reasoning, and the S-NIAH mean
read from the run's ruler.json when titans_jax.evaluation.ruler wrote one), and writes
both with every metric to a JSON file. --fetch reads missing tasks from the Hugging Face
hub (`datasets`); --hub_root reads them from a local copy of the hub's repositories instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from titans_jax.data.tokenizers import Tokenizer, load_tokenizer
from titans_jax.evaluation import hub
from titans_jax.evaluation.hub import save_jsonl

TASKS = ("wikitext", "lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy",
         "arc_challenge", "social_iqa", "boolq")
ALIASES = {"wiki": "wikitext", "lambada": "lambada_openai", "hella": "hellaswag",
           "wino": "winogrande", "arc_e": "arc_easy", "arc_c": "arc_challenge",
           "siqa": "social_iqa"}
FIELDS = {"wikitext": ("page",), "lambada_openai": ("text",),
          "piqa": ("goal", "sol1", "sol2", "label"),
          "hellaswag": ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
          "winogrande": ("sentence", "option1", "option2", "answer"),
          "arc_easy": ("question", "choices", "answerKey"),
          "arc_challenge": ("question", "choices", "answerKey"),
          "social_iqa": ("context", "question", "answerA", "answerB", "answerC", "label"),
          "boolq": ("passage", "question", "label")}
# The metric lists of lm-eval's task yamls.
MC_METRICS = {"piqa": ("acc", "acc_norm"), "hellaswag": ("acc", "acc_norm"), "winogrande": ("acc",),
              "arc_easy": ("acc", "acc_norm"), "arc_challenge": ("acc", "acc_norm"),
              "social_iqa": ("acc",), "boolq": ("acc",)}
# (dataset, config, split) lm-eval reads, for `datasets` users; split: test if it has one.
HUB = {"wikitext": ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test"),
       "lambada_openai": ("EleutherAI/lambada_openai", "default", "test"),
       "piqa": ("baber/piqa", None, "validation"),
       "hellaswag": ("Rowan/hellaswag", None, "validation"),
       "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
       "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
       "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
       "social_iqa": ("allenai/social_i_qa", None, "validation"),
       "boolq": ("super_glue", "boolq", "validation")}
# Table 1's columns: (header, task, metric); accuracies enter the average.
TABLE_COLUMNS = (("Wiki. ppl", "wikitext", "word_perplexity"),
                 ("LMB. ppl", "lambada_openai", "perplexity"),
                 ("LMB. acc", "lambada_openai", "acc"),
                 ("PIQA acc", "piqa", "acc"), ("Hella. acc_n", "hellaswag", "acc_norm"),
                 ("Wino. acc", "winogrande", "acc"), ("ARC-e acc", "arc_easy", "acc"),
                 ("ARC-c acc_n", "arc_challenge", "acc_norm"), ("SIQA acc", "social_iqa", "acc"),
                 ("BoolQ acc", "boolq", "acc"))


def canonical_task(name: str) -> str:
  name = name.strip().lower()
  name = ALIASES.get(name, name)
  if name not in TASKS:
    raise ValueError(f"zero-shot task {name!r} is unknown; expected one of {TASKS} "
                     f"(or an alias: {sorted(ALIASES)})")
  return name


# -- documents ----------------------------------------------------------------------------

def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
  if not os.path.isfile(path):
    raise ValueError(f"zero-shot data file {path!r} does not exist; expected a .jsonl file with "
                     "one Hugging Face record per line")
  docs = []
  with open(path, encoding="utf-8") as handle:
    for number, line in enumerate(handle, 1):
      if limit is not None and len(docs) >= limit:
        break
      if line.strip():
        try:
          docs.append(json.loads(line))
        except json.JSONDecodeError as error:
          raise ValueError(f"{path}:{number} is not JSON ({error.msg}); expected one record per "
                           "line") from None
  return docs


def task_path(data_dir: str, task: str) -> str:
  """DATA_DIR/<task>.jsonl, or DATA_DIR/<alias>.jsonl when only that exists."""
  path = os.path.join(data_dir, f"{task}.jsonl")
  for alias, target in ALIASES.items():
    other = os.path.join(data_dir, f"{alias}.jsonl")
    if target == task and not os.path.exists(path) and os.path.exists(other):
      return other
  return path


def load_hub_docs(task: str, limit: int | None = None, hub_root: str = "") -> list[dict]:
  """The split lm-eval evaluates, through Hugging Face `datasets` (hub.load_split)."""
  repo, name, split = HUB[task]
  return hub.load_split(repo, name, split, limit=limit, hub_root=hub_root,
                        local_hint=f"<data_dir>/{task}.jsonl")


def check_docs(task: str, docs: list[dict]) -> None:
  for index, doc in enumerate(docs):
    missing = [field for field in FIELDS[task] if field not in doc]
    if missing:
      raise ValueError(f"{task} doc {index} lacks {missing}; expected the Hugging Face fields "
                       f"{FIELDS[task]}")


# -- prompts, as lm-eval's task definitions build them -----------------------------------

class Choices:
  """One multiple-choice doc: log P(continuation_i | context_i) per choice i, the gold
  index, and the lengths acc_norm divides by (lm-eval: characters of each choice)."""

  def __init__(self, contexts, continuations, lengths, gold: int):
    self.contexts, self.continuations = list(contexts), list(continuations)
    self.lengths, self.gold = [float(n) for n in lengths], int(gold)

  @classmethod
  def shared_context(cls, context: str, choices: list[str], gold: int) -> "Choices":
    # lm-eval's target_delimiter " " sits between the prompt and each choice.
    return cls([context] * len(choices), [" " + c for c in choices], [len(c) for c in choices],
               gold)


def hellaswag_preprocess(text: str) -> str:
  text = text.strip()
  # " [title]" and the other brackets are WikiHow artifacts.
  text = text.replace(" [title]", ". ")
  text = re.sub("\\[.*?\\]", "", text)
  return text.replace("  ", " ")


def piqa_choices(doc: dict) -> Choices:
  return Choices.shared_context(f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]],
                                int(doc["label"]))


def hellaswag_choices(doc: dict) -> Choices:
  context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
  query = hellaswag_preprocess(doc["activity_label"] + ": " + context)
  return Choices.shared_context(query, [hellaswag_preprocess(e) for e in doc["endings"]],
                                int(doc["label"]))


def winogrande_choices(doc: dict) -> Choices:
  # Partial evaluation: each option fills the blank in the context; only the shared
  # rest of the sentence is scored. acc_norm would count the contexts (lm-eval's choices).
  sentence = doc["sentence"]
  blank = sentence.index("_")
  contexts = [sentence[:blank] + option for option in (doc["option1"], doc["option2"])]
  target = " " + sentence[blank + 1:].strip()
  return Choices(contexts, [target, target], [len(c) for c in contexts],
                 {"1": 0, "2": 1}[str(doc["answer"])])


def arc_choices(doc: dict) -> Choices:
  labels = list(doc["choices"]["label"])
  return Choices.shared_context(f"Question: {doc['question']}\nAnswer:",
                                list(doc["choices"]["text"]), labels.index(doc["answerKey"]))


def siqa_choices(doc: dict) -> Choices:
  return Choices.shared_context(f"Q: {doc['context']} {doc['question']}\nA:",
                                [doc["answerA"], doc["answerB"], doc["answerC"]],
                                int(doc["label"]) - 1)


def boolq_choices(doc: dict) -> Choices:
  return Choices.shared_context(f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:",
                                ["no", "yes"], int(doc["label"]))


MC_BUILDERS = {"piqa": piqa_choices, "hellaswag": hellaswag_choices,
               "winogrande": winogrande_choices, "arc_easy": arc_choices,
               "arc_challenge": arc_choices, "social_iqa": siqa_choices, "boolq": boolq_choices}


def lambada_request(doc: dict) -> tuple[str, str]:
  words = doc["text"].split(" ")
  return " ".join(words[:-1]), " " + words[-1]


def wikitext_detokenize(page: str) -> str:
  """lm-eval's wikitext detokenizer, rule for rule (its quirks included)."""
  text = page.replace("s '", "s'")
  text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)  # a no-op on real text, kept as lm-eval has it
  for old, new in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                   (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
    text = text.replace(old, new)
  text = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", text)
  text = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", text)
  text = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", text)
  text = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', text)
  text = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", text)
  for old, new in (("= = = =", "===="), ("= = =", "==="), ("= =", "=="),
                   (" " + chr(176) + " ", chr(176)), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "),
                   (" 's", "'s")):
    text = text.replace(old, new)
  return text


def wikitext_counts(page: str) -> tuple[int, int]:
  """(words, bytes) of the page before detokenizing, as lm-eval counts them."""
  return len(re.split(r"\s+", page)), len(page.encode("utf-8"))


# -- tokens ---------------------------------------------------------------------------------

def prefix_token(tokenizer: Tokenizer) -> int:
  """What conditions a first token: BOS, else EOS (lm-eval's prefix_token_id); a tokenizer
  with neither (bytes) uses its encoding of a newline, a document break in plain text."""
  for candidate in (tokenizer.bos_id, tokenizer.eos_id):
    if candidate is not None:
      return int(candidate)
  return int(tokenizer.encode("\n")[-1])


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str,
                prefix_id: int) -> tuple[list[int], list[int]]:
  """lm-eval's split: trailing context spaces move to the continuation; the whole string
  is encoded and the continuation is what follows the context's own encoding."""
  if context == "":
    return [prefix_id], tokenizer.encode(continuation)
  spaces = len(context) - len(context.rstrip())
  if spaces:
    context, continuation = context[:-spaces], context[-spaces:] + continuation
  whole = tokenizer.encode(context + continuation)
  context_ids = tokenizer.encode(context)
  # A context of spaces only encodes to nothing; the prefix gives the first token a condition.
  return (context_ids or [prefix_id]), whole[len(context_ids):]


def rolling_windows(tokens: list[int], prefix_id: int,
                    max_length: int) -> list[tuple[list[int], int]]:
  """lm-eval's get_rolling_token_windows(context_len=1) + make_disjoint_window as
  (sequence, scored): disjoint windows of max_length predicted tokens, each fed the
  max_length tokens before its last one (the first one: the prefix and the window)."""
  full = [prefix_id] + list(tokens)
  windows = []
  for start in range(0, len(tokens), max_length):
    end = min(start + max_length, len(tokens))
    windows.append((full[max(0, end - max_length):end + 1], end - start))
  return windows


# -- scoring --------------------------------------------------------------------------------

def _target_logprobs(model, inputs, targets):
  logits = model(inputs).astype(jnp.float32)
  # log_softmax at the targets only: no second [B, T, vocab] array.
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  picked = picked - jax.nn.logsumexp(logits, axis=-1)
  return picked, jnp.argmax(logits, axis=-1) == targets


# One jitted step for every Scorer: compiled programs are shared across tasks and calls.
_score_step = nnx.jit(_target_logprobs)


class Scorer:
  """Log-likelihoods of the last `scored` tokens of token sequences, in padded batches.

  Sequences are sorted by length, right-padded to a multiple of length_multiple (the
  model is causal, so padding after a position cannot change it) and batches are padded
  to batch_size rows: one compile per padded length.
  """

  def __init__(self, model, *, batch_size: int, max_length: int, length_multiple: int = 64):
    for name, value in (("batch_size", batch_size), ("max_length", max_length),
                        ("length_multiple", length_multiple)):
      if int(value) < 1:
        raise ValueError(f"{name}={value} must be >= 1")
    self.model, self.batch_size = model, int(batch_size)
    self.max_length, self.length_multiple = int(max_length), int(length_multiple)

  def padded_length(self, length: int) -> int:
    rounded = -(-length // self.length_multiple) * self.length_multiple
    return max(length, min(rounded, self.max_length))

  def __call__(self, requests: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
    """requests: (tokens, scored); like lm-eval, the model is fed tokens[:-1] cut to the
    last max_length, and the sum of log P over the last `scored` targets comes back with
    whether each of them is the argmax."""
    prepared = []
    for tokens, scored in requests:
      if scored > self.max_length:
        raise ValueError(f"a continuation of {scored} tokens does not fit max_length="
                         f"{self.max_length}; expected a larger max_length")
      tokens = list(tokens)[-(self.max_length + 1):]
      if scored > len(tokens) - 1:
        raise ValueError(f"{scored} scored tokens need a context token before them; got "
                         f"{len(tokens)} tokens")
      prepared.append((tokens, scored))
    results: list = [(0.0, True)] * len(prepared)
    order = sorted((i for i, (_, scored) in enumerate(prepared) if scored > 0),
                   key=lambda i: -len(prepared[i][0]))
    for first in range(0, len(order), self.batch_size):
      batch = order[first:first + self.batch_size]
      length = self.padded_length(max(len(prepared[i][0]) - 1 for i in batch))
      inputs = np.zeros((self.batch_size, length), np.int32)
      targets = np.zeros((self.batch_size, length), np.int32)
      for row, index in enumerate(batch):
        tokens = prepared[index][0]
        inputs[row, :len(tokens) - 1] = tokens[:-1]
        targets[row, :len(tokens) - 1] = tokens[1:]
      picked, greedy = _score_step(self.model, jnp.asarray(inputs), jnp.asarray(targets))
      picked, greedy = np.asarray(picked, np.float64), np.asarray(greedy)
      for row, index in enumerate(batch):
        tokens, scored = prepared[index]
        end = len(tokens) - 1
        results[index] = (float(picked[row, end - scored:end].sum()),
                          bool(greedy[row, end - scored:end].all()))
    return results


# -- tasks ----------------------------------------------------------------------------------

def score_multiple_choice(task: str, docs: list[dict], tokenizer: Tokenizer, scorer: Scorer,
                          prefix_id: int) -> dict:
  built = [MC_BUILDERS[task](doc) for doc in docs]
  requests, owners = [], []
  for number, choices in enumerate(built):
    for context, continuation in zip(choices.contexts, choices.continuations):
      context_ids, continuation_ids = encode_pair(tokenizer, context, continuation, prefix_id)
      requests.append((context_ids + continuation_ids, len(continuation_ids)))
      owners.append(number)
  loglikelihoods = [ll for ll, _ in scorer(requests)]
  per_doc = [[] for _ in built]
  for owner, ll in zip(owners, loglikelihoods):
    per_doc[owner].append(ll)
  acc, acc_norm = [], []
  for choices, lls in zip(built, per_doc):
    lls = np.asarray(lls, np.float64)
    acc.append(float(np.argmax(lls) == choices.gold))
    acc_norm.append(float(np.argmax(lls / np.asarray(choices.lengths)) == choices.gold))
  metrics = {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm))}
  return {**{name: metrics[name] for name in MC_METRICS[task]}, "samples": len(docs)}


def score_lambada(docs: list[dict], tokenizer: Tokenizer, scorer: Scorer, prefix_id: int) -> dict:
  requests = []
  for doc in docs:
    context_ids, target_ids = encode_pair(tokenizer, *lambada_request(doc), prefix_id)
    requests.append((context_ids + target_ids, len(target_ids)))
  scored = scorer(requests)
  # lm-eval: perplexity = exp(-mean of the per-doc log-likelihoods); acc = greedy target.
  return {"perplexity": math.exp(-float(np.mean([ll for ll, _ in scored]))),
          "acc": float(np.mean([greedy for _, greedy in scored])), "samples": len(docs)}


def score_wikitext(docs: list[dict], tokenizer: Tokenizer, scorer: Scorer, prefix_id: int) -> dict:
  requests, owners = [], []
  for number, doc in enumerate(docs):
    windows = rolling_windows(tokenizer.encode(wikitext_detokenize(doc["page"])), prefix_id,
                              scorer.max_length)
    requests.extend(windows)
    owners.extend([number] * len(windows))
  per_doc = np.zeros((len(docs),), np.float64)
  for owner, (ll, _) in zip(owners, scorer(requests)):
    per_doc[owner] += ll
  counts = np.asarray([wikitext_counts(doc["page"]) for doc in docs], np.float64).reshape(-1, 2)
  total, words, num_bytes = per_doc.sum(), counts[:, 0].sum(), counts[:, 1].sum()
  # lm-eval's weighted_perplexity and bits_per_byte: sums over all docs, then one ratio.
  return {"word_perplexity": math.exp(-total / words),
          "byte_perplexity": math.exp(-total / num_bytes),
          "bits_per_byte": -total / num_bytes / math.log(2), "samples": len(docs)}


def evaluate_zero_shot(model, tokenizer: Tokenizer, tasks: dict, *, batch_size: int = 8,
                       max_length: int = 2048, limit: int | None = None, length_multiple: int = 64,
                       prefix_id: int | None = None, progress: bool = False) -> dict:
  """{task: {metric: value, samples}} for `tasks`: {name: .jsonl path or list of docs}.

  limit keeps the first `limit` docs of each task (lm-eval's --limit).
  """
  config = getattr(model, "config", None)
  model_vocab = getattr(config, "vocab_size", None)
  if model_vocab is not None and tokenizer.vocab_size > model_vocab:
    raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is "
                     f"{model_vocab}; expected the tokenizer the model was trained with")
  if limit is not None and limit < 1:
    raise ValueError(f"limit={limit} must be >= 1 (or None for every doc)")
  scorer = Scorer(model, batch_size=batch_size, max_length=max_length,
                  length_multiple=length_multiple)
  prefix_id = prefix_token(tokenizer) if prefix_id is None else int(prefix_id)
  results, started = {}, time.time()
  for name, source in tasks.items():
    task = canonical_task(name)
    docs = read_jsonl(source, limit) if isinstance(source, str) else list(source)[:limit]
    if not docs:
      raise ValueError(f"task {task!r} has no docs; expected at least one")
    check_docs(task, docs)
    if task == "wikitext":
      results[task] = score_wikitext(docs, tokenizer, scorer, prefix_id)
    elif task == "lambada_openai":
      results[task] = score_lambada(docs, tokenizer, scorer, prefix_id)
    else:
      results[task] = score_multiple_choice(task, docs, tokenizer, scorer, prefix_id)
    if progress:
      shown = ", ".join(f"{k} {v:.4f}" for k, v in results[task].items() if k != "samples")
      print(f"  zero-shot {task} ({len(docs)} docs): {shown} ({time.time() - started:.0f}s)",
            file=sys.stderr, flush=True)
  return results


def table_values(results: dict) -> dict:
  """Table 1's columns ({header: value or None}): perplexities as they are, accuracies in
  percent, and Avg., the mean of the accuracies present."""
  values = {}
  for header, task, metric in TABLE_COLUMNS:
    value = results.get(task, {}).get(metric)
    values[header] = None if value is None else value * (1 if "perplexity" in metric else 100)
  accuracies = [v for (h, _, m), v in zip(TABLE_COLUMNS, values.values())
                if "perplexity" not in m and v is not None]
  values["Avg."] = float(np.mean(accuracies)) if accuracies else None
  return values


def table5_values(results: dict, ruler_scores: dict | None = None) -> dict:
  """Table 5's columns (spec section 5: "ppl / reasoning / S-NIAH mean"); how the paper
  averages them is our reading (experiments/t5_ablations.py): ppl = mean of Wiki. and LMB.
  perplexity, reasoning = Table 1's Avg., S-NIAH = mean of RULER's scores (ruler_scores:
  {task: {length: score}}, as ruler.json holds them). Means of the values present; None
  where none is."""
  table1 = table_values(results)
  ppls = [table1[h] for h in ("Wiki. ppl", "LMB. ppl") if table1[h] is not None]
  cells = [float(v) for by_length in (ruler_scores or {}).values() for v in by_length.values()
           if v is not None]
  return {"ppl": float(np.mean(ppls)) if ppls else None, "reasoning": table1["Avg."],
          "S-NIAH": float(np.mean(cells)) if cells else None}


def _layout(values: dict, name: str) -> str:
  width = max(len(name), 5)
  header = f"{'':<{width}} | " + " | ".join(f"{h:>{max(len(h), 6)}}" for h in values)
  cells = [f"{'-' if v is None else format(v, '.2f'):>{max(len(h), 6)}}" for h, v in values.items()]
  return "\n".join([header, f"{name:<{width}} | " + " | ".join(cells)])


def format_row(results: dict, name: str = "model") -> str:
  """Header and row in Table 1's layout; '-' where a task was not run."""
  return _layout(table_values(results), name)


def format_table5(results: dict, ruler_scores: dict | None = None, name: str = "model") -> str:
  """Header and row of Table 5's columns (table5_values); '-' where nothing was run."""
  return _layout(table5_values(results, ruler_scores), name)


def read_ruler_scores(path: str) -> tuple[dict, int | None]:
  """(scores, step) of a ruler.json (titans_jax.evaluation.ruler's --out)."""
  try:
    with open(path) as handle:
      saved = json.load(handle)
    return dict(saved["scores"]), saved.get("step")
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise ValueError(f"--ruler_json={path!r} is not a ruler.json ({error}); expected the file "
                     "titans_jax.evaluation.ruler writes") from None


# -- CLI --------------------------------------------------------------------------------------

def main(argv=None):
  import argparse

  from titans_jax import train

  parser = argparse.ArgumentParser(description="Zero-shot Table 1 scores of a workdir's "
                                   "checkpoint, as lm-evaluation-harness 0.4.x computes them.")
  parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
  parser.add_argument("--data_dir", required=True, help="folder of <task>.jsonl files "
                      "(Hugging Face records; see the module docstring)")
  parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
  parser.add_argument("--tokenizer", default="", help="byte | sentencepiece:PATH | hf:PATH | PATH "
                      "(default: the run's data.tokenizer, else byte)")
  parser.add_argument("--max_length", type=int, default=0,
                      help="tokens the model sees at once (default: the run's data.seq_len)")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--limit", type=int, default=None, help="first N docs of each task")
  parser.add_argument("--fetch", action="store_true", help="download missing tasks with Hugging "
                      "Face `datasets` into --data_dir first")
  parser.add_argument("--hub_root", default="", help="with --fetch: read the hub repositories "
                      "from this local folder (<hub_root>/<repo id>) instead of the network")
  parser.add_argument("--ruler_json", default="", help="RULER results for Table 5's S-NIAH "
                      "column (default: WORKDIR/ruler.json when it exists)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--out", default="", help="JSON path (default: WORKDIR/zero_shot.json)")
  args = parser.parse_args(argv)
  names = [canonical_task(name) for name in args.tasks.split(",") if name.strip()]
  ruler_json = args.ruler_json or os.path.join(args.workdir, "ruler.json")
  try:  # a bad --ruler_json fails before the checkpoint loads
    ruler_scores, ruler_step = (read_ruler_scores(ruler_json) if args.ruler_json
                                or os.path.isfile(ruler_json) else (None, None))
  except ValueError as error:
    parser.error(str(error))
  sources = {}
  for task in names:
    path = task_path(args.data_dir, task)
    if not os.path.exists(path) and args.fetch:
      save_jsonl(load_hub_docs(task, hub_root=args.hub_root), path)
    sources[task] = path
  model, config, step = train.load_model(args.workdir, args.step)
  if ruler_scores is not None and ruler_step is not None and ruler_step != step:
    # A stale ruler.json would put another checkpoint's S-NIAH next to these scores.
    print(f"warning: {ruler_json} scored step {ruler_step}, these scores step {step}",
          file=sys.stderr)
  tokenizer_spec = args.tokenizer or config.data.get("tokenizer", "") or "byte"
  tokenizer = load_tokenizer(tokenizer_spec)
  max_length = args.max_length or int(config.data.seq_len)
  results = evaluate_zero_shot(model, tokenizer, sources, batch_size=args.batch_size,
                               max_length=max_length, limit=args.limit, progress=True)
  name = f"{config.model.variant}@{step}"
  print("Table 1\n" + format_row(results, name))
  print("Table 5 (ppl: mean of Wiki. and LMB.; reasoning: Avg.; S-NIAH: mean of ruler.json)\n"
        + format_table5(results, ruler_scores, name))
  out = args.out or os.path.join(args.workdir, "zero_shot.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as handle:
    json.dump({"workdir": args.workdir, "step": step, "tokenizer": tokenizer_spec,
               "max_length": max_length, "limit": args.limit, "results": results,
               "table": table_values(results), "table5": table5_values(results, ruler_scores),
               "ruler_json": ruler_json if ruler_scores is not None else None,
               "ruler_step": ruler_step}, handle, indent=2)
  print(f"Results: {out}")


if __name__ == "__main__":
  main()
