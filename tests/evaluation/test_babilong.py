"""BABILong evaluation: prompt formats, BABILong's answer matching, per-task accuracy and
the qa1-qa5 average, errors, and the harness end to end on a tiny model."""

import json

import numpy as np
import pytest
from flax import nnx

from titans_jax import generate, models
from titans_jax.data import babilong as data
from titans_jax.data.tokenizers import load_tokenizer
from titans_jax.evaluation import babilong

BYTES = load_tokenizer("byte")
RECORD = {"input": "Mary went to the garden. Noise text. Mary moved to the kitchen.",
          "question": "Where is Mary?", "target": "kitchen"}


def write_tasks(root, lengths=("0k",), tasks=data.DEFAULT_TASKS, count=3):
  """Tiny BABILong files: <root>/<length>/<task>.jsonl, targets from each task's labels."""
  for length in lengths:
    (root / length).mkdir(parents=True, exist_ok=True)
    for task in tasks:
      labels = data.TASK_LABELS[task]
      with open(root / length / f"{task}.jsonl", "w") as handle:
        for i in range(count):
          target = labels[i % len(labels)]
          record = {"input": f"[{task}] Filler text. The answer is {target}. More filler.",
                    "question": "Where?", "target": target}
          handle.write(json.dumps(record) + "\n")
  return str(root)


def tiny_model():
  config = models.ModelConfig(variant="swa", vocab_size=256, width=16, num_layers=1, num_heads=2,
                              window=8, num_persistent=2)
  return models.build_model(config, nnx.Rngs(0))


def test_plain_prompt_and_completion():
  assert data.format_prompt(RECORD, "qa1") == (
      "Mary went to the garden. Noise text. Mary moved to the kitchen.\nQuestion: Where is Mary?"
      "\nAnswer:")
  assert data.format_completion("kitchen") == " kitchen."


def test_instruct_prompt_follows_babilongs_template():
  prompt = data.format_prompt(RECORD, "qa1", "instruct")
  instruction, examples, post_prompt = data.INSTRUCT_PROMPTS["qa1"]
  assert prompt == (f"{instruction}\n\n{examples}\n\n{post_prompt}\n\n<context>\n{RECORD['input']}"
                    "\n</context>\n\nQuestion: Where is Mary?")
  assert prompt.startswith("I will give you context with the facts about positions")
  with pytest.raises(ValueError, match="qa1-qa5 only"):
    data.format_prompt(RECORD, "qa7", "instruct")


@pytest.mark.parametrize("target, output, question, task, expected", [
    ("kitchen", " kitchen.", "Where is Mary?", "qa1", True),
    ("kitchen", "The most recent location of Mary is Kitchen. Then garden.", "Where is Mary?",
     "qa1", True),
    ("kitchen", " kitchen or garden", "Where is Mary?", "qa1", False),
    ("kitchen", " garden. kitchen", "Where is Mary?", "qa1", False),  # only the first sentence
    ("bathroom", "Before the kitchen the apple was in the bathroom",
     "Where was the apple before the kitchen?", "qa3", True),  # labels in the question ignored
    ("Fred", " fred", "Who did Mary give the apple to?", "qa5", True),
    ("apple,milk", "apple, milk", "What is Daniel carrying?", "qa8", True),
    ("apple,milk", "apple", "What is Daniel carrying?", "qa8", False),
    ("kitchen", "kitchen <context> garden", "Where is Mary?", "qa1", True),
])
def test_answers_are_matched_as_babilong_matches_them(target, output, question, task, expected):
  assert babilong.compare_answers(target, output, question, data.TASK_LABELS[task]) is expected


def test_accuracy_per_task_and_the_qa1_to_qa5_average(tmp_path, monkeypatch):
  # Given a "model" that answers qa1 and qa2 right and everything else wrong
  root = write_tasks(tmp_path, lengths=("0k", "1k"))

  def answer(model, prompt, max_new_tokens, **kwargs):
    text = bytes(np.asarray(prompt, np.uint8).tolist()).decode()
    right = text.startswith(("[qa1]", "[qa2]"))
    words = " " + text.split("The answer is ")[1].split(".")[0] + "." if right else " nowhere."
    return np.frombuffer(words.encode(), np.uint8).astype(np.int32)

  monkeypatch.setattr(generate, "generate", answer)
  # When the harness scores two lengths of qa1-qa5, 2 samples each
  result = babilong.evaluate_babilong(tiny_model(), BYTES, root, lengths=["0k", "1k"],
                                      samples=2, progress=False)
  # Then each cell is its task's accuracy and the average is over qa1-qa5
  assert len(result.records) == 2 * 5 * 2
  for length in ("0k", "1k"):
    assert result.accuracy[length] == {"qa1": 100.0, "qa2": 100.0, "qa3": 0.0, "qa4": 0.0,
                                       "qa5": 0.0}
    assert result.counts[length] == {task: 2 for task in data.DEFAULT_TASKS}
    assert result.average[length] == 40.0
  lines = babilong.format_table(result).splitlines()
  assert lines[1].split()[-1] == "qa1-5" and lines[3].split() == [
      "0k", "|", "100.0", "100.0", "0.0", "0.0", "0.0", "40.0"]


def test_missing_files_and_bad_names_fail_before_decoding(tmp_path, monkeypatch):
  monkeypatch.setattr(generate, "generate", lambda *a, **k: pytest.fail("decoded"))
  root = write_tasks(tmp_path, tasks=("qa1",))
  model = tiny_model()
  cases = [({"tasks": ["qa2"]}, "0k/qa2.jsonl' does not exist"),
           ({"tasks": ["qa21"]}, "unknown; expected one of qa1 .. qa20"),
           ({"tasks": ["qa1"], "lengths": ["2k"]}, "2k/qa1.jsonl' does not exist"),
           ({"tasks": ["qa1"], "samples": 0}, "samples=0"),
           ({"tasks": ["qa1"], "prompt": "chat"}, "format 'chat' is unknown")]
  for kwargs, message in cases:
    with pytest.raises(ValueError, match=message):
      babilong.evaluate_babilong(model, BYTES, root, **kwargs)
  (tmp_path / "0k" / "qa1.jsonl").write_text('{"input": "x", "question": "y"}\n')
  with pytest.raises(ValueError, match="qa1.jsonl:1 lacks \\['target'\\]"):
    babilong.evaluate_babilong(model, BYTES, root, tasks=["qa1"])


def test_harness_runs_a_tiny_model_end_to_end(tmp_path):
  root = write_tasks(tmp_path, tasks=("qa1", "qa2"), count=1)
  result = babilong.evaluate_babilong(tiny_model(), BYTES, root, lengths=["0k"], tasks="qa1,qa2",
                                      piece_len=16, max_new_tokens=4, name="swa-tiny",
                                      progress=False)
  assert set(result.accuracy["0k"]) == {"qa1", "qa2"}
  assert all(isinstance(r["output"], str) and len(r["output"]) <= 4 for r in result.records)
  assert json.loads(json.dumps(result.to_json()))["prompt"] == "plain"
  assert "avg(qa1,qa2)" in babilong.format_table(result)


def test_the_cli_reads_the_runs_prompt_format_and_writes_json(tmp_path, monkeypatch, capsys):
  import ml_collections

  from titans_jax import train

  root = write_tasks(tmp_path / "data", tasks=("qa1",))
  config = ml_collections.ConfigDict({"data": {"seq_len": 64, "source": "babilong",
                                               "babilong_prompt": "instruct"},
                                      "model": {"variant": "mac"}})
  monkeypatch.setattr(train, "load_model", lambda workdir, step: (tiny_model(), config, 3))
  monkeypatch.setattr(generate, "generate",
                      lambda *a, **k: np.frombuffer(b" bathroom.", np.uint8).astype(np.int32))
  babilong.main([f"--workdir={tmp_path}", f"--data_dir={root}", "--lengths=0k", "--tasks=qa1"])
  assert "mac@3: BABILong accuracy (%), instruct prompt" in capsys.readouterr().out
  saved = json.load(open(tmp_path / "babilong.json"))
  assert saved["prompt"] == "instruct" and saved["accuracy"]["0k"]["qa1"] == pytest.approx(100 / 3)
  # A missing file is a usage error before any checkpoint loads
  monkeypatch.setattr(train, "load_model", lambda *a: pytest.fail("loaded"))
  with pytest.raises(SystemExit):
    babilong.main([f"--workdir={tmp_path}", f"--data_dir={root}", "--lengths=8k"])
  assert "8k/qa1.jsonl does not exist" in capsys.readouterr().err


def hub_records(length, task, count):
  """Records for one (config = length, split = task) of a BABILong hub copy, telling which."""
  labels = data.TASK_LABELS[task]
  return [{"input": f"[{length}/{task}] Filler text. The answer is {labels[i % len(labels)]}.",
           "question": f"Where? ({i})", "target": labels[i % len(labels)]} for i in range(count)]


def test_fetch_only_writes_the_fine_tuning_data_from_a_local_hub_root(local_hub, tmp_path,
                                                                      monkeypatch, capsys):
  from titans_jax import train

  # Given a copy of RMT-team/babilong-train-5k-samples under --hub_root (config = length,
  # split = task; read by the real `datasets`), every (length, task) with its own records
  repo = tmp_path / "hub" / "RMT-team" / "babilong-train-5k-samples"
  splits = {(length, task): hub_records(length, task, count=2 + (length == "0k"))
            for length in ("0k", "1k") for task in ("qa1", "qa2", "qa3")}
  local_hub(repo, splits)
  monkeypatch.setattr(train, "load_model", lambda *a: pytest.fail("loaded"))
  out = tmp_path / "train5k"
  babilong.main([f"--data_dir={out}", "--fetch_only", "--hub_dataset=train",
                 f"--hub_root={tmp_path / 'hub'}", "--lengths=0k", "--tasks=qa1,qa2"])
  # Then each (length, task) came from its config and split of the train dataset, and the
  # folder the fine-tuning source reads holds its records; no checkpoint was loaded
  assert "Fetched 2 file(s)" in capsys.readouterr().out
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jsonl")) == [
      "0k/qa1.jsonl", "0k/qa2.jsonl"]
  for task in ("qa1", "qa2"):
    assert data.read_records(data.task_file(str(out), "0k", task)) == splits["0k", task]
  with pytest.raises(SystemExit):  # evaluating needs the run
    babilong.main([f"--data_dir={out}", "--lengths=0k", "--tasks=qa1"])
  assert "--workdir is required" in capsys.readouterr().err
  with pytest.raises(ValueError, match="--hub_root has no"):  # the test set is not there
    babilong.fetch(str(tmp_path / "test"), ["1k"], ["qa3"], hub_root=str(tmp_path / "hub"))
  assert not list((tmp_path / "test").rglob("*.jsonl*"))  # nothing to take as fetched later
  # The test set by default, by its hub id when no --hub_root is given (`datasets` reads
  # a folder of that relative path first), limit keeping the first records
  local_hub(tmp_path / "RMT-team" / "babilong", {("1k", "qa3"): hub_records("1k", "qa3", 3),
                                                 ("1k", "qa1"): hub_records("1k", "qa1", 3)})
  monkeypatch.chdir(tmp_path)
  (written,) = babilong.fetch(str(tmp_path / "test"), ["1k"], ["qa3"], limit=2)
  assert data.read_records(written) == hub_records("1k", "qa3", 3)[:2]
