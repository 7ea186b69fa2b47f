"""RULER S-NIAH: prompts as RULER writes them, haystacks sized in tokens, needles at their
depths, RULER's scoring, clear errors, and the harness end to end on a tiny model."""

import json
import re

import numpy as np
import pytest
from flax import nnx

from titans_jax import generate, models
from titans_jax.data.tokenizers import ByteTokenizer, load_tokenizer
from titans_jax.evaluation import ruler

BYTES = load_tokenizer("byte")
ESSAY = ("The best way to get startup ideas is not to try to think of them. Look for problems, "
         "preferably problems you have yourself! Why? Because the very best ideas tend to have "
         "three things in common: they are something the founders themselves want, that they "
         "themselves can build, and that few others realize are worth doing. ") * 4


def tiny_model():
  # SWA: the zoo model with the cheapest compiles; the harness treats every variant alike.
  config = models.ModelConfig(variant="swa", vocab_size=256, width=16, num_layers=1, num_heads=2,
                              window=8, num_persistent=2)
  return models.build_model(config, nnx.Rngs(0))


@pytest.mark.parametrize("task, kind", [("niah_single_1", "number"), ("niah_single_2", "number"),
                                        ("niah_single_3", "uuid")])
def test_the_template_is_rulers_for_one_needle_and_one_query(task, kind):
  prompt = ruler.prompt_text(task, "CONTEXT", "quiet-river")
  assert prompt == (
      f"A special magic {kind} is hidden within the following text. Make sure to memorize it. "
      f"I will quiz you about the {kind} afterwards.\nCONTEXT\nWhat is the special magic {kind} "
      f"for quiet-river mentioned in the provided text? The special magic {kind} for quiet-river "
      "mentioned in the provided text is")
  assert ruler.needle_text(task, "quiet-river", "42") == (
      f"One of the special magic {kind}s for quiet-river is: 42.")


def test_noise_and_essay_samples_are_built_as_ruler_builds_them():
  # Noise: RULER's paragraph repeated, the needle among the repeats, joined by newlines
  sample = ruler.make_sample("niah_single_1", 1024, BYTES, index=3, depth=0.5)
  units = sample.haystack_units
  lines = [ruler.NOISE] * units
  lines.insert(units // 2, sample.needle)
  assert sample.context == "\n".join(lines)
  assert sample.prompt == ruler.prompt_text("niah_single_1", sample.context, sample.key)
  assert re.fullmatch(r"[a-z]+-[a-z]+", sample.key) and re.fullmatch(r"\d{7}", sample.answer)
  # Essay: sentences of the essay's first words, the needle between two of them
  sample = ruler.make_sample("niah_single_3", 1024, BYTES, depth=0.5,
                             essay=ruler.essay_words(ESSAY))
  before, after = sample.context.split(" " + sample.needle + " ")
  assert (before + " " + after).split(" ") == ruler.essay_words(ESSAY)[:sample.haystack_units]
  assert before.endswith((".", "!", "?")) and str(sample.answer).count("-") == 4


@pytest.mark.parametrize("tokenizer", [BYTES, ByteTokenizer(bos_id=256)], ids=["byte", "byte+bos"])
@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_3"])
@pytest.mark.parametrize("length", [512, 2048])
def test_the_prompt_fills_the_length_in_tokens(tokenizer, task, length):
  words = ruler.essay_words(ESSAY)
  sample = ruler.make_sample(task, length, tokenizer, depth=0.3, essay=words)
  used = len(sample.tokens) + sample.max_new_tokens
  assert used <= length
  # One more haystack unit would not fit: the prompt is as long as whole units allow.
  bigger = ruler.prompt_text(task, ruler.build_context(task, sample.haystack_units + 1,
                                                       sample.needle, 0.3, words), sample.key)
  assert len(ruler.encode_prompt(tokenizer, bigger)) + sample.max_new_tokens > length
  assert (sample.tokens[0] == 256) == (tokenizer.bos_id == 256)


def test_the_prompt_is_sized_in_the_models_tokenizer(tmp_path):
  # A word-level tokenizer packs far more text into the same number of tokens than bytes.
  tokenizers = pytest.importorskip("tokenizers")
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(
      {w: i for i, w in enumerate(["[UNK]"] + sorted(set(re.findall(r"\w+|[^\w\s]",
                                                                   ruler.NOISE + ESSAY))))},
      unk_token="[UNK]"))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  words = load_tokenizer(str(tmp_path / "tokenizer.json"))
  by_words = ruler.make_sample("niah_single_1", 1024, words)
  by_bytes = ruler.make_sample("niah_single_1", 1024, BYTES)
  assert len(by_words.tokens) + by_words.max_new_tokens <= 1024
  assert by_words.haystack_units > 3 * by_bytes.haystack_units


@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_2"])
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_the_needle_sits_at_the_requested_depth(task, depth):
  sample = ruler.make_sample(task, 8192, BYTES, depth=depth, essay=ruler.essay_words(ESSAY))
  position = sample.context.index(sample.needle) / (len(sample.context) - len(sample.needle))
  assert abs(position - depth) < 0.03


def test_a_short_essay_is_repeated_as_ruler_repeats_it():
  words = ruler.essay_words("One short essay. It ends here.")
  sample = ruler.make_sample("niah_single_2", 1024, BYTES, depth=0.0, essay=words)
  assert sample.haystack_units > 10 * len(words)
  assert sample.context.count("One short essay.") == -(-sample.haystack_units // len(words))


def test_depths_spread_evenly_or_cycle_through_those_given():
  assert ruler.sample_depths(1) == [0.5]
  assert ruler.sample_depths(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
  assert ruler.sample_depths(3, [0.1, 0.9]) == [0.1, 0.9, 0.1]


def test_string_match_all_scores_the_answer_contained_case_insensitively():
  uuid = "0d6c1180-5157-4fad-985d-e8c8d4860f45"
  assert ruler.string_match_all([" 1234567.", "it is 7654321"], [["1234567"], ["1234567"]]) == 50.0
  assert ruler.string_match_all([uuid.upper() + "."], [[uuid]]) == 100.0
  assert ruler.postprocess_pred("  1234567\x00tail \n") == "1234567\ntail"


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["niah_single_9"]}, "unknown; expected one of"),
    ({"tasks": ["niah_single_2"]}, "no essay text was given"),
    ({"lengths": [256]}, r"expected lengths >= \d+"),
    ({"samples": 0}, "samples=0"),
    ({"depths": [1.5]}, "depths=\\[1.5\\]"),
    ({"max_new_tokens": 0}, "max_new_tokens=0"),
])
def test_bad_arguments_fail_before_any_decoding(kwargs, message, monkeypatch):
  monkeypatch.setattr(generate, "generate", lambda *a, **k: pytest.fail("decoded"))
  arguments = {"tasks": ["niah_single_1"], "lengths": [512], "samples": 1, **kwargs}
  with pytest.raises(ValueError, match=message):
    ruler.evaluate_ruler(tiny_model(), BYTES, **arguments)


def test_a_tokenizer_larger_than_the_vocabulary_is_an_error():
  with pytest.raises(ValueError, match="tokenizer has 257 ids but model.vocab_size is 256"):
    ruler.evaluate_ruler(tiny_model(), ByteTokenizer(bos_id=256), ["niah_single_1"], [512], 1)


def _fake_generate(right: bool):
  """generate.generate stand-in: writes the needle's value (or a wrong one) as bytes."""
  def fake(model, prompt, max_new_tokens, **kwargs):
    text = bytes(np.asarray(prompt, np.uint8).tolist()).decode()
    value = re.search(r"for [a-z]+-[a-z]+ is: ([0-9a-f-]+)\.", text).group(1)
    answer = (" " + value if right else " 0000000") + "."
    return np.frombuffer(answer.encode(), np.uint8).astype(np.int32)[:max_new_tokens]
  return fake


@pytest.mark.parametrize("right, expected", [(True, 100.0), (False, 0.0)])
def test_scores_follow_what_the_model_writes(monkeypatch, right, expected):
  monkeypatch.setattr(generate, "generate", _fake_generate(right))
  result = ruler.evaluate_ruler(tiny_model(), BYTES, lengths=[512, 1024], samples=2,
                                essay_text=ESSAY, progress=False)
  assert all(result.score(task, n) == expected for task in ruler.TASKS for n in (512, 1024))
  assert len(result.records) == 3 * 2 * 2
  assert {r["score"] for r in result.records} == {expected}


def test_harness_runs_a_tiny_model_end_to_end(tmp_path, capsys):
  result = ruler.evaluate_ruler(tiny_model(), BYTES, lengths=[512], samples=1, essay_text=ESSAY,
                                piece_len=8, name="swa-tiny", progress=False)
  assert result.tasks == list(ruler.TASKS) and result.lengths == [512]
  assert all(0.0 <= result.score(task, 512) <= 100.0 for task in ruler.TASKS)
  assert [r["prompt_tokens"] + ruler.DEFAULT_MAX_NEW_TOKENS[ruler.TASKS[r["task"]].values] <= 512
          for r in result.records] == [True] * 3
  lines = ruler.format_table2(result).splitlines()
  assert "S-NIAH-1 (PK)" in lines[0] and "S-NIAH-3 (W)" in lines[0]
  assert lines[1].split()[:3] == ["Model", "|", "512"] and lines[3].startswith("swa-tiny |")
  saved = json.load(open(ruler.write_json(result, str(tmp_path / "ruler.json"))))
  assert saved["scores"].keys() == set(ruler.TASKS) and saved["table"] == "\n".join(lines)


def test_the_cli_rejects_bad_arguments_before_loading_a_checkpoint(tmp_path, monkeypatch, capsys):
  from titans_jax import train

  monkeypatch.setattr(train, "load_model", lambda *a: pytest.fail("loaded"))
  for flags, message in ((["--tasks=niah_single_2"], "no essay text"),
                         (["--tasks=niah_single_7"], "unknown"),
                         (["--essay_path=" + str(tmp_path / "none.txt")], "does not exist")):
    with pytest.raises(SystemExit):
      ruler.main([f"--workdir={tmp_path}", *flags])
    assert message in capsys.readouterr().err


def test_the_cli_writes_table2_and_json(tmp_path, monkeypatch, capsys):
  import ml_collections

  from titans_jax import train

  config = ml_collections.ConfigDict({"data": {"seq_len": 64}, "model": {"variant": "swa"}})
  monkeypatch.setattr(train, "load_model", lambda workdir, step: (tiny_model(), config, 7))
  monkeypatch.setattr(generate, "generate", _fake_generate(True))
  (tmp_path / "essay.txt").write_text(ESSAY)
  ruler.main([f"--workdir={tmp_path}", "--lengths=512", "--samples=1",
              f"--essay_path={tmp_path / 'essay.txt'}", f"--out={tmp_path / 'out.json'}"])
  assert "swa@7" in capsys.readouterr().out
  saved = json.load(open(tmp_path / "out.json"))
  assert saved["step"] == 7 and saved["scores"]["niah_single_3"] == {"512": 100.0}
