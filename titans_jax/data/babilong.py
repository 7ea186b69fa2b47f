"""BABILong (Kuratov et al. 2024, "BABILong: Testing the Limits of LLMs with Long Context
Reasoning-in-a-Haystack"): bAbI facts hidden in PG19 text, a question, a one-word answer.

Data as the Hugging Face hub publishes it, written out as JSON lines:

    <root>/<length>/<task>.jsonl     one record per line: {"input", "question", "target"}

`RMT-team/babilong` (test; config = length "0k", "1k", ..., "128k", ...; split = task
"qa1".."qa20") and `RMT-team/babilong-train-5k-samples` (fine-tuning) both fit this layout.

Prompt formats (shared by the fine-tuning source below and titans_jax.evaluation.babilong,
so a model is evaluated in the format it was trained in):
  plain     "{input}\\nQuestion: {question}\\nAnswer:" then " {target}." -- the usual format for
            small models fine-tuned on the task (no instruction to follow);
  instruct  BABILong's evaluation prompt: task instruction, in-context examples, post-prompt,
            "<context>\\n{input}\\n</context>\\n\\nQuestion: {question}" (qa1-qa5), then
            "\\nAnswer: {target}." when training on it.
The answer ends with "." because BABILong's scorer reads the output up to its first ".".

BabilongSource is a Grain random-access source of byte tokens (vocab 256), the same
{"inputs", "targets", "weights"} examples as titans_jax.data.sources, with loss weight only
on the answer's tokens. An example longer than seq_len + 1 tokens is an error found when
the source is built (naming the file, line and length it needs), unless truncate=True:
then the oldest bytes of its context are dropped (the question and answer always stay).
"""

from __future__ import annotations

import json
import os

import numpy as np

from titans_jax.data.sources import BYTE_VOCAB_SIZE, example_from_tokens

TASKS = tuple(f"qa{number}" for number in range(1, 21))
DEFAULT_TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
# Lengths the hub's RMT-team/babilong publishes (configs); local folders may use any name.
HUB_LENGTHS = ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k", "1M",
               "10M")
FIELDS = ("input", "question", "target")
PROMPT_FORMATS = ("plain", "instruct")

# The answers each task can have (BABILong's metrics.py); its scorer looks for them.
_LOCATIONS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
TASK_LABELS = {
    "qa1": _LOCATIONS, "qa2": _LOCATIONS, "qa3": _LOCATIONS, "qa4": _LOCATIONS,
    "qa5": ("Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"),
    "qa6": ("no", "yes"), "qa7": ("none", "one", "three", "two"),
    "qa8": ("apple", "football", "milk", "nothing"), "qa9": ("no", "yes"),
    "qa10": ("maybe", "no", "yes"), "qa11": _LOCATIONS, "qa12": _LOCATIONS, "qa13": _LOCATIONS,
    "qa14": ("bedroom", "cinema", "kitchen", "office", "park", "school"),
    "qa15": ("cat", "mouse", "sheep", "wolf"), "qa16": ("gray", "green", "white", "yellow"),
    "qa17": ("no", "yes"), "qa18": ("no", "yes"),
    "qa19": ("e,e", "e,n", "e,s", "n,e", "n,n", "n,w", "s,e", "s,s", "s,w", "w,n", "w,s", "w,w"),
    "qa20": ("bedroom", "bored", "garden", "hungry", "kitchen", "thirsty", "tired"),
}

# BABILong's DEFAULT_PROMPTS (babilong/prompts.py) for qa1-qa5: (instruction, examples,
# post_prompt), joined by its template "{instruction}\n\n{examples}\n\n{post_prompt}".
INSTRUCT_PROMPTS = {
    "qa1": (
        "I will give you context with the facts about positions of different persons hidden in "
        "some random text and a question. You need to answer the question based only on the "
        "information from the facts. If a person was in different locations, use the latest "
        "location to answer the question.",
        "<example>\nCharlie went to the hallway. Judith come back to the kitchen. Charlie "
        "travelled to balcony. Where is Charlie?\nAnswer: The most recent location of Charlie is "
        "balcony.\n</example>\n\n<example>\nAlan moved to the garage. Charlie went to the beach. "
        "Alan went to the shop. Rouse travelled to balcony. Where is Alan?\nAnswer: The most "
        "recent location of Alan is shop.\n</example>",
        "Always return your answer in the following format: The most recent location of "
        "\u2019person\u2019 is \u2019location\u2019. Do not write anything else after that."),
    "qa2": (
        "I give you context with the facts about locations and actions of different persons "
        "hidden in some random text and a question.You need to answer the question based only on "
        "the information from the facts.\nIf a person got an item in the first location and "
        "travelled to the second location the item is also in the second location. If a person "
        "dropped an item in the first location and moved to the second location the item remains "
        "in the first location.",
        "<example>\nCharlie went to the kitchen. Charlie got a bottle. Charlie moved to the "
        "balcony. Where is the bottle?\nAnswer: The bottle is in the balcony.\n</example>\n"
        "<example>\nAlan moved to the garage. Alan got a screw driver. Alan moved to the kitchen. "
        "Where is the screw driver?\nAnswer: The screw driver is in the kitchen.\n</example>",
        "Always return your answer in the following format: The \u2019item\u2019 is in "
        "\u2019location\u2019. Do not write anything else after that."),
    "qa3": (
        "I give you context with the facts about locations and actions of different persons "
        "hidden in some random text and a question. You need to answer the question based only "
        "on the information from the facts.\nIf a person got an item in the first location and "
        "travelled to the second location the item is also in the second location. If a person "
        "dropped an item in the first location and moved to the second location the item remains "
        "in the first location.",
        "<example>\nJohn journeyed to the bedroom. Mary grabbed the apple. Mary went back to the "
        "bathroom. Daniel journeyed to the bedroom. Daniel moved to the garden. Mary travelled to "
        "the kitchen. Where was the apple before the kitchen?\nAnswer: Before the kitchen the "
        "apple was in the bathroom.\n</example>\n<example>\nJohn went back to the bedroom. John "
        "went back to the garden. John went back to the kitchen. Sandra took the football. "
        "Sandra travelled to the garden. Sandra journeyed to the bedroom. Where was the football "
        "before the bedroom?\nAnswer: Before the bedroom the football was in the garden.\n"
        "</example>",
        "Always return your answer in the following format: Before the $location_1$ the $item$ "
        "was in the $location_2$. Do not write anything else after that."),
    "qa4": (
        "I will give you context with the facts about different people, their location and "
        "actions, hidden in some random text and a question. You need to answer the question "
        "based only on the information from the facts.",
        "<example>\nThe hallway is south of the kitchen. The bedroom is north of the kitchen. "
        "What is the kitchen south of?\nAnswer: bedroom\n</example>\n<example>\nThe garden is "
        "west of the bedroom. The bedroom is west of the kitchen. What is west of the bedroom?\n"
        "Answer: garden\n</example>",
        "Your answer should contain only one word - location. Do not write anything else after "
        "that."),
    "qa5": (
        "I will give you context with the facts about locations and their relations hidden in "
        "some random text and a question. You need to answer the question based only on the "
        "information from the facts.",
        "<example>\nMary picked up the apple there. Mary gave the apple to Fred. Mary moved to "
        "the bedroom. Bill took the milk there. Who did Mary give the apple to?\nAnswer: Fred\n"
        "</example>\n<example>\nJeff took the football there. Jeff passed the football to Fred. "
        "Jeff got the milk there. Bill travelled to the bedroom. Who gave the football?\nAnswer: "
        "Jeff\n</example>\n<example>\nFred picked up the apple there. Fred handed the apple to "
        "Bill. Bill journeyed to the bedroom. Jeff went back to the garden. What did Fred give "
        "to Bill?\nAnswer: apple\n</example>",
        "Your answer should contain only one word. Do not write anything else after that. Do "
        "not explain your answer."),
}


def canonical_task(name: str) -> str:
  name = name.strip().lower()
  if name not in TASKS:
    raise ValueError(f"BABILong task {name!r} is unknown; expected one of qa1 .. qa20")
  return name


def parse_names(text, kind: str) -> list[str]:
  """'qa1,qa2' or a sequence -> a list of names; kind names the field in errors."""
  names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
  if not names:
    raise ValueError(f"no BABILong {kind} given; expected a comma-separated list such as "
                     f"{'qa1,qa2' if kind == 'tasks' else '0k,1k'}")
  return names


def check_prompt_format(prompt: str, tasks) -> None:
  if prompt not in PROMPT_FORMATS:
    raise ValueError(f"BABILong prompt format {prompt!r} is unknown; expected one of "
                     f"{PROMPT_FORMATS}")
  missing = [task for task in tasks if prompt == "instruct" and task not in INSTRUCT_PROMPTS]
  if missing:
    raise ValueError(f"the instruct format has BABILong's instructions for qa1-qa5 only, not "
                     f"{missing}; use the plain format for these tasks")


def prompt_parts(record: dict, task: str, prompt: str = "plain") -> tuple[str, str, str]:
  """(head, context, tail): the prompt is head + context + tail, the context the record's
  input; split so the context can be cut without touching the question."""
  context, question = str(record["input"]).strip(), str(record["question"]).strip()
  if prompt == "plain":
    return "", context, f"\nQuestion: {question}\nAnswer:"
  check_prompt_format(prompt, [task])
  instruction, examples, post_prompt = INSTRUCT_PROMPTS[task]
  # BABILong's DEFAULT_TEMPLATE, then .strip() of the whole (no effect on these strings).
  head = f"{instruction}\n\n{examples}\n\n{post_prompt}\n\n<context>\n"
  return head, context, f"\n</context>\n\nQuestion: {question}"


def format_prompt(record: dict, task: str, prompt: str = "plain") -> str:
  return "".join(prompt_parts(record, task, prompt))


def format_completion(target: str, prompt: str = "plain") -> str:
  """What follows the prompt in training data; the "." ends BABILong's scored span."""
  return f" {target}." if prompt == "plain" else f"\nAnswer: {target}."


def task_file(root: str, length: str, task: str) -> str:
  return os.path.join(os.path.expanduser(root), length, f"{task}.jsonl")


def _parse_line(line: bytes, path: str, number: int) -> dict:
  try:
    record = json.loads(line)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}:{number} is not JSON ({error.msg}); expected one BABILong record "
                     f"per line with fields {FIELDS}") from None
  missing = [field for field in FIELDS if not isinstance(record, dict) or field not in record]
  if missing:
    raise ValueError(f"{path}:{number} lacks {missing}; expected BABILong's fields {FIELDS}")
  return record


def _require_file(path: str) -> None:
  if not os.path.isfile(path):
    raise ValueError(f"BABILong file {path!r} does not exist; expected <root>/<length>/<task>.jsonl "
                     "(e.g. 0k/qa1.jsonl: the hub's RMT-team/babilong config / split as JSON lines)")


def read_records(path: str, limit: int | None = None) -> list[dict]:
  """The first `limit` records (all when None) of one <length>/<task>.jsonl file."""
  _require_file(path)
  records = []
  with open(path, "rb") as handle:
    for number, line in enumerate(handle, 1):
      if limit is not None and len(records) >= limit:
        break
      if line.strip():
        records.append(_parse_line(line, path, number))
  return records


def _require_names(tasks, lengths) -> tuple[list[str], list[str]]:
  tasks = [canonical_task(task) for task in parse_names(tasks, "tasks")]
  return tasks, parse_names(lengths, "lengths")


class BabilongSource:
  """Fine-tuning examples from <root>/<length>/<task>.jsonl for every length and task.

  Record i is the i-th line over the files (lengths outer, tasks inner); lines are read
  on demand from byte offsets indexed once, so large files never sit in memory. Tokens
  are the UTF-8 bytes of prompt + completion, right-padded with 0 to seq_len + 1; the
  loss weight is 1 exactly on the targets that are completion bytes.
  """

  def __init__(self, root: str, *, seq_len: int, tasks=DEFAULT_TASKS, lengths=("0k",),
               prompt: str = "plain", truncate: bool = False):
    self.tasks, self.lengths = _require_names(tasks, lengths)
    check_prompt_format(prompt, self.tasks)
    if int(seq_len) < 1:
      raise ValueError(f"seq_len={seq_len} must be >= 1")
    self.root, self.seq_len, self.prompt, self.truncate = root, int(seq_len), prompt, bool(truncate)
    self.vocab_size = BYTE_VOCAB_SIZE
    self.files = [(length, task, task_file(root, length, task))
                  for length in self.lengths for task in self.tasks]
    file_ids, offsets = self._index()
    self.file_ids, self.offsets = np.asarray(file_ids, np.int32), np.asarray(offsets, np.int64)

  def _index(self) -> tuple[list[int], list[int]]:
    """Byte offsets of every record; checks each one fits seq_len + 1 tokens."""
    file_ids, offsets, too_long = [], [], []
    for file_id, (_, task, path) in enumerate(self.files):
      _require_file(path)
      with open(path, "rb") as handle:
        offset = 0
        for number, line in enumerate(handle, 1):
          if line.strip():
            needed, minimum = self._lengths(_parse_line(line, path, number), task)
            if minimum > self.seq_len + 1 or (needed > self.seq_len + 1 and not self.truncate):
              too_long.append((f"{path}:{number}", needed, minimum))
            file_ids.append(file_id)
            offsets.append(offset)
          offset += len(line)
    if too_long:
      self._raise_too_long(too_long)
    if not offsets:
      raise ValueError(f"BABILong files {[path for _, _, path in self.files]} hold no records")
    return file_ids, offsets

  def _raise_too_long(self, too_long) -> None:
    where, needed, minimum = too_long[0]
    longest = max(n for _, n, _ in too_long)
    if self.truncate:
      raise ValueError(f"{where}: its question and answer alone take {minimum} byte tokens, over "
                       f"seq_len + 1 = {self.seq_len + 1} even with its context cut; expected "
                       f"data.seq_len >= {max(m for _, _, m in too_long) - 1}")
    raise ValueError(f"{where}: {len(too_long)} example(s) do not fit data.seq_len={self.seq_len}; "
                     f"this one needs {needed} byte tokens (prompt + answer), the longest "
                     f"{longest}. Expected data.seq_len >= {longest - 1}, or "
                     "data.babilong_truncate=True to drop the oldest context bytes")

  def _lengths(self, record: dict, task: str) -> tuple[int, int]:
    """(tokens the whole example needs, tokens it needs with no context)."""
    head, context, tail = (part.encode("utf-8") for part in prompt_parts(record, task, self.prompt))
    answer = format_completion(str(record["target"]).strip(), self.prompt).encode("utf-8")
    return len(head) + len(context) + len(tail) + len(answer), len(head) + len(tail) + len(answer)

  def __len__(self) -> int:
    return int(self.offsets.shape[0])

  def _record(self, index: int) -> tuple[dict, str, str]:
    if not 0 <= index < len(self):
      raise IndexError(f"BabilongSource index {index} is outside [0, {len(self)})")
    length, task, path = self.files[int(self.file_ids[index])]
    with open(path, "rb") as handle:
      handle.seek(int(self.offsets[index]))
      return _parse_line(handle.readline(), path, -1), length, task

  def __getitem__(self, index: int) -> dict:
    example = self.sample(index)
    return {name: example[name] for name in ("inputs", "targets", "weights")}

  def sample(self, index: int) -> dict:
    """The example plus task, length, target, answer_start (offset of the completion in
    the token stream; the first weighted target is answer_start - 1) and cut (context
    bytes dropped)."""
    record, length, task = self._record(int(index))
    head, context, tail = (part.encode("utf-8") for part in prompt_parts(record, task, self.prompt))
    target = str(record["target"]).strip()
    answer = format_completion(target, self.prompt).encode("utf-8")
    cut = max(0, len(head) + len(context) + len(tail) + len(answer) - (self.seq_len + 1))
    stream = head + context[cut:] + tail + answer  # cut > 0 only when truncate (checked above)
    answer_start = len(stream) - len(answer)
    tokens = np.zeros((self.seq_len + 1,), np.int32)
    tokens[:len(stream)] = np.frombuffer(stream, np.uint8)
    weights = np.zeros((self.seq_len,), np.float32)
    weights[answer_start - 1:len(stream) - 1] = 1.0  # target t predicts token t + 1
    return {**example_from_tokens(tokens, weights), "task": task, "length": length,
            "target": target, "answer_start": answer_start, "cut": cut}
