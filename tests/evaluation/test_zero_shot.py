"""The zero-shot harness: lm-eval 0.4.x prompts character for character, and every metric
equal to the one computed by hand from a tiny random model's own log-likelihoods."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from titans_jax.data.tokenizers import ByteTokenizer
from titans_jax.evaluation import zero_shot
from titans_jax.models import ModelConfig, build_model

MAX_LENGTH = 128
NEWLINE = 10  # the prefix token of a byte tokenizer (no BOS / EOS)
REFERENCE_SHAPE = (64, MAX_LENGTH + 8)  # not a harness bucket: the reference pads its own way

LONG_PASSAGE = ("Powdered sugar, also called confectioners' sugar, icing sugar, and icing cake, "
                "is a finely ground sugar produced by milling granulated sugar into a powdered "
                "state. It usually contains a small amount of anti-caking agent.")
DOCS = {
    "piqa": [
        {"goal": "How do I keep bread fresh?", "sol1": "Store it in a sealed bag.",
         "sol2": "Leave it out in the rain.", "label": 0},
        {"goal": "To dry wet shoes,", "sol1": "stuff them with newspaper.",
         "sol2": "fill them with soup.", "label": 1}],
    "hellaswag": [
        {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
         "ctx_b": "he", "endings": ["is using wrap to wrap a pair of skis.",
                                    "is ripping level tiles off.", "is holding a rubik's cube.",
                                    "starts pulling up roofing on a roof."], "label": "3"},
        {"activity_label": "Home and Garden",
         "ctx_a": "[header] How to clean a roof [title] Check the weather.", "ctx_b": "",
         "endings": ["[step] Pick a dry day.", "Wait for  snow [substeps] first.", "Call a friend.",
                     "Buy a ladder."], "label": "0"}],
    "winogrande": [
        {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
         "option1": "Sarah", "option2": "Maria", "answer": "1"},
        {"sentence": "The trophy doesn't fit into the brown suitcase because the _ is too large.",
         "option1": "trophy", "option2": "suitcase", "answer": "2"}],
    "arc_easy": [
        {"question": "Which gas do plants absorb from the air?",
         "choices": {"text": ["oxygen", "carbon dioxide", "helium", "neon"],
                     "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
        {"question": "What is 2 + 2?",
         "choices": {"text": ["3", "4", "five"], "label": ["1", "2", "3"]},
         "answerKey": "2"}],
    "social_iqa": [
        {"context": "Tracy didn't go home that evening and resisted Riley's attacks.",
         "question": "What does Tracy need to do before this?", "answerA": "make a new plan",
         "answerB": "Go home and see Riley", "answerC": "Find somewhere to go", "label": "3"},
        {"context": "Kai gave Sam a gift.", "question": "How would Sam feel?", "answerA": "happy",
         "answerB": "angry at Kai", "answerC": "bored", "label": "1"}],
    "boolq": [
        {"passage": LONG_PASSAGE, "question": "is confectionary sugar the same as powdered sugar",
         "label": 1},
        {"passage": "Cats are mammals.", "question": "is a cat a fish", "label": False}],
    "lambada_openai": [
        {"text": "the cat sat on the mat"}, {"text": "she opened the door and saw her brother"},
        {"text": "he said hello"}],
    "wikitext": [
        {"page": " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : Unrecorded Chronicles "
                 "( Japanese : 戦場のヴァルキュリア3 , lit . Valkyria of the Battlefield 3 ) , commonly "
                 "referred to as Valkyria Chronicles III outside Japan , is a tactical role @-@ "
                 "playing video game developed by Sega and Media.Vision for the PlayStation "
                 "Portable . \n"},
        {"page": " = Tiny = \n A short page . \n"}],
}
DOCS["arc_challenge"] = DOCS["arc_easy"][::-1]


# -- prompts, hard-coded from lm-eval's task definitions ----------------------------------

def test_hellaswag_query_and_choices_follow_lm_eval_preprocessing():
  activity = zero_shot.hellaswag_choices(DOCS["hellaswag"][0])
  assert activity.contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
  assert activity.continuations == [" is using wrap to wrap a pair of skis.",
                                    " is ripping level tiles off.", " is holding a rubik's cube.",
                                    " starts pulling up roofing on a roof."]
  assert activity.gold == 3
  wikihow = zero_shot.hellaswag_choices(DOCS["hellaswag"][1])
  assert wikihow.contexts[0] == "Home and Garden: How to clean a roof. Check the weather."
  # lm-eval strips before removing brackets, so "[step] ..." keeps its leading space.
  assert wikihow.continuations[:2] == ["  Pick a dry day.", " Wait for snow first."]
  assert wikihow.lengths[:2] == [len(" Pick a dry day."), len("Wait for snow first.")]


def test_multiple_choice_prompts_match_lm_eval_character_for_character():
  piqa = zero_shot.piqa_choices(DOCS["piqa"][0])
  assert piqa.contexts == ["Question: How do I keep bread fresh?\nAnswer:"] * 2
  assert piqa.continuations == [" Store it in a sealed bag.", " Leave it out in the rain."]
  assert piqa.lengths == [25.0, 25.0] and piqa.gold == 0

  wino = zero_shot.winogrande_choices(DOCS["winogrande"][0])
  assert wino.contexts == ["Sarah was a much better surgeon than Maria so Sarah",
                           "Sarah was a much better surgeon than Maria so Maria"]
  assert wino.continuations == [" always got the harder cases."] * 2 and wino.gold == 0
  assert zero_shot.winogrande_choices(DOCS["winogrande"][1]).gold == 1

  arc = zero_shot.arc_choices(DOCS["arc_easy"][0])
  assert arc.contexts[0] == "Question: Which gas do plants absorb from the air?\nAnswer:"
  assert arc.continuations == [" oxygen", " carbon dioxide", " helium", " neon"] and arc.gold == 1
  assert zero_shot.arc_choices(DOCS["arc_easy"][1]).gold == 1  # numeric labels: "2" is index 1

  siqa = zero_shot.siqa_choices(DOCS["social_iqa"][0])
  assert siqa.contexts[0] == ("Q: Tracy didn't go home that evening and resisted Riley's attacks. "
                              "What does Tracy need to do before this?\nA:")
  assert siqa.continuations == [" make a new plan", " Go home and see Riley",
                                " Find somewhere to go"] and siqa.gold == 2

  boolq = zero_shot.boolq_choices(DOCS["boolq"][1])
  assert boolq.contexts[0] == "Cats are mammals.\nQuestion: is a cat a fish?\nAnswer:"
  assert boolq.continuations == [" no", " yes"] and boolq.gold == 0

  assert zero_shot.lambada_request(DOCS["lambada_openai"][0]) == ("the cat sat on the", " mat")


def test_wikitext_detokenizer_and_counts_follow_lm_eval():
  page = DOCS["wikitext"][0]["page"]
  assert zero_shot.wikitext_detokenize(page) == (
      " = Valkyria Chronicles III =\n\nSenjō no Valkyria 3: Unrecorded Chronicles (Japanese: "
      "戦場のヴァルキュリア3, lit. Valkyria of the Battlefield 3), commonly referred to as Valkyria "
      "Chronicles III outside Japan, is a tactical role-playing video game developed by Sega and "
      "Media.Vision for the PlayStation Portable.\n")
  assert zero_shot.wikitext_detokenize(" = = Gameplay = = \n") == " == Gameplay ==\n"
  # Words of the original page split on whitespace runs, empty ends included, as lm-eval counts.
  assert zero_shot.wikitext_counts(" = Tiny = \n A short page . \n") == (9, 28)


def test_encode_pair_moves_trailing_spaces_and_prefixes_an_empty_context():
  tokenizer = ByteTokenizer()
  assert zero_shot.encode_pair(tokenizer, "ab ", "c", NEWLINE) == ([97, 98], [32, 99])
  assert zero_shot.encode_pair(tokenizer, "", "hi", NEWLINE) == ([NEWLINE], [104, 105])
  assert zero_shot.prefix_token(tokenizer) == NEWLINE
  assert zero_shot.prefix_token(ByteTokenizer(eos_id=257)) == 257
  assert zero_shot.prefix_token(ByteTokenizer(bos_id=256, eos_id=257)) == 256


# -- scores, against the model's own log-likelihoods ---------------------------------------

@pytest.fixture(scope="module")
def model():
  config = ModelConfig(variant="swa", width=32, num_layers=1, num_heads=2, window=16,
                       vocab_size=256)
  return build_model(config, nnx.Rngs(0))


_forward = nnx.jit(lambda model, inputs: model(inputs))


def reference_scores(model, pairs):
  """(log-likelihood, greedy) of each (context ids, continuation ids) by hand: lm-eval's
  input (the last MAX_LENGTH + 1 tokens, less the last), one model call, log-softmax."""
  sequences = [(list(context) + list(continuation))[-(MAX_LENGTH + 1):] for context, continuation
               in pairs]
  scores = []
  rows, width = REFERENCE_SHAPE
  for first in range(0, len(sequences), rows):
    chunk = sequences[first:first + rows]
    inputs = np.zeros(REFERENCE_SHAPE, np.int32)
    for row, tokens in enumerate(chunk):
      inputs[row, :len(tokens) - 1] = tokens[:-1]
    logits = np.asarray(_forward(model, jnp.asarray(inputs)), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logprobs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    for row, tokens in enumerate(chunk):
      count = len(pairs[first + row][1])
      positions = range(len(tokens) - 1 - count, len(tokens) - 1)
      scores.append((sum(logprobs[row, p, tokens[p + 1]] for p in positions),
                     all(np.argmax(logits[row, p]) == tokens[p + 1] for p in positions)))
  return scores


def by_hand_bytes(text):
  return list(text.encode("utf-8"))


def lm_eval_rolling_windows(tokens, prefix, max_length):
  """lm-eval's get_rolling_token_windows(context_len=1), then make_disjoint_window, transcribed."""
  first = min(max_length, len(tokens))
  windows = [([prefix] + tokens[:first - 1], tokens[:first])]
  predicted = first
  while predicted < len(tokens):
    count = min(len(tokens) - predicted, max_length)
    end = predicted + count
    windows.append((tokens[end - max_length - 1:end - 1], tokens[end - count:end]))
    predicted += count
  return [(context[:len(context) - (len(predicted_tokens) - 1)], predicted_tokens)
          for context, predicted_tokens in windows]


@pytest.fixture(scope="module")
def results(model, tmp_path_factory):
  folder = tmp_path_factory.mktemp("zero_shot")
  tasks = {}
  for task, docs in DOCS.items():
    tasks[task] = str(folder / f"{task}.jsonl")
    zero_shot.save_jsonl(docs, tasks[task])
  tasks["arc_challenge"] = DOCS["arc_challenge"]  # docs in memory work as well as files
  return zero_shot.evaluate_zero_shot(model, ByteTokenizer(), tasks, batch_size=8,
                                      max_length=MAX_LENGTH), folder


def test_padded_batches_give_the_logits_of_the_exact_sequences(model):
  # The reference and the harness rely on causality: right padding leaves earlier logits.
  tokens = by_hand_bytes("Question: does padding change anything?\nAnswer: no")
  exact = np.asarray(_forward(model, jnp.asarray([tokens])))[0]
  padded = np.zeros(REFERENCE_SHAPE, np.int32)
  padded[3, :len(tokens)] = tokens
  np.testing.assert_allclose(np.asarray(_forward(model, jnp.asarray(padded)))[3, :len(tokens)],
                             exact, rtol=1e-5, atol=1e-5)


def test_scorer_log_likelihoods_equal_the_hand_computed_ones(model):
  tokenizer = ByteTokenizer()
  pairs, requests = [], []
  for doc in DOCS["piqa"] + DOCS["boolq"]:  # boolq's long passage is cut to MAX_LENGTH
    built = (zero_shot.piqa_choices if "goal" in doc else zero_shot.boolq_choices)(doc)
    for context, continuation in zip(built.contexts, built.continuations):
      pairs.append((by_hand_bytes(context), by_hand_bytes(continuation)))
      ids = zero_shot.encode_pair(tokenizer, context, continuation, NEWLINE)
      requests.append((ids[0] + ids[1], len(ids[1])))
  assert [tuple(map(list, (c, t))) for c, t in pairs] == [
      (tokens[:-n], tokens[-n:]) for tokens, n in requests]
  scorer = zero_shot.Scorer(model, batch_size=8, max_length=MAX_LENGTH)
  got = scorer(requests)
  want = reference_scores(model, pairs)
  np.testing.assert_allclose([ll for ll, _ in got], [ll for ll, _ in want], rtol=1e-5, atol=1e-4)
  assert [g for _, g in got] == [g for _, g in want]


@pytest.mark.parametrize("task", ["piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                                  "social_iqa", "boolq"])
def test_multiple_choice_accuracies_equal_the_hand_computed_ones(model, results, task):
  builder = zero_shot.MC_BUILDERS[task]
  acc, acc_norm = [], []
  for doc in DOCS[task]:
    built = builder(doc)
    pairs = [(by_hand_bytes(c), by_hand_bytes(t))
             for c, t in zip(built.contexts, built.continuations)]
    lls = np.array([ll for ll, _ in reference_scores(model, pairs)])
    # acc_norm divides by the characters of each choice (lm-eval's doc_to_choice strings).
    choice_chars = np.array([len(t) - 1 for t in built.continuations] if task != "winogrande"
                            else [len(c) for c in built.contexts], np.float64)
    acc.append(np.argmax(lls) == built.gold)
    acc_norm.append(np.argmax(lls / choice_chars) == built.gold)
  got = results[0][task]
  assert got["samples"] == len(DOCS[task])
  assert got["acc"] == pytest.approx(np.mean(acc))
  if task in ("piqa", "hellaswag", "arc_easy", "arc_challenge"):
    assert got["acc_norm"] == pytest.approx(np.mean(acc_norm))
  else:  # lm-eval reports acc only for these
    assert set(got) == {"acc", "samples"}


def test_lambada_perplexity_and_accuracy_equal_the_hand_computed_ones(model, results):
  pairs = []
  for doc in DOCS["lambada_openai"]:
    words = doc["text"].split(" ")
    pairs.append((by_hand_bytes(" ".join(words[:-1])), by_hand_bytes(" " + words[-1])))
  scores = reference_scores(model, pairs)
  got = results[0]["lambada_openai"]
  assert got["perplexity"] == pytest.approx(math.exp(-np.mean([ll for ll, _ in scores])), rel=1e-5)
  assert got["acc"] == pytest.approx(np.mean([greedy for _, greedy in scores]))


def test_wikitext_rolling_perplexities_equal_the_hand_computed_ones(model, results):
  total, words, num_bytes, windows = 0.0, 0, 0, 0
  for doc in DOCS["wikitext"]:
    tokens = by_hand_bytes(zero_shot.wikitext_detokenize(doc["page"]))
    pairs = lm_eval_rolling_windows(tokens, NEWLINE, MAX_LENGTH)
    windows += len(pairs)
    total += sum(ll for ll, _ in reference_scores(model, pairs))
    words += len(doc["page"].split()) + 2  # re.split(r"\s+") also counts the empty ends
    num_bytes += len(doc["page"].encode("utf-8"))
  assert windows == 3 + 1  # the long page spans three windows, the last one overlapping
  got = results[0]["wikitext"]
  assert got["word_perplexity"] == pytest.approx(math.exp(-total / words), rel=1e-5)
  assert got["byte_perplexity"] == pytest.approx(math.exp(-total / num_bytes), rel=1e-5)
  assert got["bits_per_byte"] == pytest.approx(-total / num_bytes / math.log(2), rel=1e-5)


def test_rolling_windows_match_lm_eval_and_one_window_scores_the_whole_doc():
  tokens = list(range(100, 137))
  for max_length in (1, 5, 16, 37, 64):
    ours = zero_shot.rolling_windows(tokens, 7, max_length)
    theirs = lm_eval_rolling_windows(tokens, 7, max_length)
    assert [(c + t, len(t)) for c, t in theirs] == ours
  assert zero_shot.rolling_windows(tokens, 7, 64) == [([7] + tokens, len(tokens))]
  assert zero_shot.rolling_windows([], 7, 64) == []


# -- table, CLI, errors ---------------------------------------------------------------------

def test_format_row_lays_out_table_1_and_averages_the_accuracies():
  results = {"wikitext": {"word_perplexity": 19.93}, "lambada_openai": {"perplexity": 20.12,
                                                                       "acc": 0.4},
             "piqa": {"acc": 0.7, "acc_norm": 0.1}, "hellaswag": {"acc": 0.1, "acc_norm": 0.5}}
  header, row = zero_shot.format_row(results, "mac").splitlines()
  assert header.split(" | ")[1:] == ["Wiki. ppl", "LMB. ppl", "LMB. acc", "PIQA acc",
                                     "Hella. acc_n", "Wino. acc", "ARC-e acc", "ARC-c acc_n",
                                     "SIQA acc", "BoolQ acc", "  Avg."]
  cells = [cell.strip() for cell in row.split(" | ")]
  assert cells == ["mac", "19.93", "20.12", "40.00", "70.00", "50.00", "-", "-", "-", "-", "-",
                   "53.33"]


def test_table5_columns_average_the_perplexities_the_accuracies_and_ruler():
  results = {"wikitext": {"word_perplexity": 27.0}, "lambada_openai": {"perplexity": 29.0,
                                                                      "acc": 0.4},
             "piqa": {"acc": 0.7, "acc_norm": 0.1}}
  ruler = {"niah_single_1": {"2048": 100.0, "4096": 90.0}, "niah_single_2": {"2048": 50.0}}
  assert zero_shot.table5_values(results, ruler) == pytest.approx(
      {"ppl": 28.0, "reasoning": 55.0, "S-NIAH": 80.0})
  header, row = zero_shot.format_table5(results, None, "lmm").splitlines()
  assert [c.strip() for c in header.split(" | ")[1:]] == ["ppl", "reasoning", "S-NIAH"]
  assert [c.strip() for c in row.split(" | ")] == ["lmm", "28.00", "55.00", "-"]
  assert set(zero_shot.table5_values({}).values()) == {None}


def test_cli_scores_a_workdir_checkpoint_into_json(model, results, monkeypatch, tmp_path, capsys):
  import ml_collections

  from titans_jax import train

  config = ml_collections.ConfigDict({"model": {"variant": "swa"},
                                      "data": {"seq_len": MAX_LENGTH}})
  monkeypatch.setattr(train, "load_model", lambda workdir, step=None: (model, config, 7))
  # A ruler.json in the workdir (what evaluation.ruler writes) fills Table 5's S-NIAH column
  (tmp_path / "ruler.json").write_text(json.dumps(
      {"step": 7, "scores": {"niah_single_1": {"2048": 40.0, "4096": 20.0}}}))
  out = tmp_path / "zs.json"
  zero_shot.main(["--workdir", str(tmp_path), "--data_dir", str(results[1]),
                  "--tasks", "piqa,siqa,lambada", "--batch_size", "8", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert saved["step"] == 7 and saved["tokenizer"] == "byte" and saved["max_length"] == MAX_LENGTH
  for task in ("piqa", "social_iqa", "lambada_openai"):
    assert saved["results"][task] == pytest.approx(results[0][task])
  assert saved["table"]["PIQA acc"] == pytest.approx(100 * results[0]["piqa"]["acc"])
  ppl = results[0]["lambada_openai"]["perplexity"]  # no wikitext run: LMB. ppl alone
  assert saved["table5"] == pytest.approx({"ppl": ppl, "reasoning": saved["table"]["Avg."],
                                           "S-NIAH": 30.0})
  assert saved["ruler_step"] == 7
  # The printed tables: Table 1's row, then Table 5's columns, each for "variant@step"
  printed = capsys.readouterr().out
  table1 = printed[printed.index("Table 1\n"):].splitlines()[1:3]
  table5 = printed[printed.index("Table 5"):].splitlines()[1:3]
  assert "Wiki. ppl" in table1[0] and table1[1].startswith("swa@7")
  assert [c.strip() for c in table5[1].split(" | ")] == [
      "swa@7", f"{ppl:.2f}", f"{saved['table']['Avg.']:.2f}", "30.00"]


def test_fetch_reads_lm_evals_split_from_a_local_hub_root(model, local_hub, monkeypatch,
                                                          tmp_path):
  import ml_collections

  from titans_jax import train

  # Given a copy of allenai/ai2_arc under --hub_root, read by the real `datasets`: each
  # (config, split) holds its own docs, ARC-Easy's test split the ones lm-eval scores
  def arc(tag, count=2):
    return [{"id": f"{tag}-{i}", **doc, "question": f"[{tag}] {doc['question']}"}
            for i, doc in enumerate((DOCS["arc_easy"] * count)[:count])]

  repo = tmp_path / "hub" / "allenai" / "ai2_arc"
  splits = {(config, split): arc(f"{config}/{split}", count=2 + (split == "test"))
            for config in ("ARC-Easy", "ARC-Challenge")
            for split in ("train", "validation", "test")}
  local_hub(repo, splits)
  config = ml_collections.ConfigDict({"model": {"variant": "swa"},
                                      "data": {"seq_len": MAX_LENGTH}})
  monkeypatch.setattr(train, "load_model", lambda workdir, step=None: (model, config, 1))
  data_dir = tmp_path / "zero_shot"
  zero_shot.main(["--workdir", str(tmp_path), "--data_dir", str(data_dir), "--tasks", "arc_e",
                  "--fetch", "--hub_root", str(tmp_path / "hub"), "--batch_size", "8"])
  # Then --fetch read lm-eval's (repository, config, split) from --hub_root, the hub's fields
  # as they are (the nested choices too), and wrote it as <data_dir>/arc_easy.jsonl
  assert zero_shot.read_jsonl(str(data_dir / "arc_easy.jsonl")) == splits["ARC-Easy", "test"]
  saved = json.loads((tmp_path / "zero_shot.json").read_text())
  assert saved["results"]["arc_easy"]["samples"] == 3
  assert zero_shot.load_hub_docs("arc_challenge", hub_root=str(tmp_path / "hub")) == splits[
      "ARC-Challenge", "test"]
  with pytest.raises(ValueError, match="--hub_root has no"):
    zero_shot.load_hub_docs("piqa", hub_root=str(tmp_path / "hub"))
  # Without --hub_root the hub's id goes to `datasets` as it is; limit keeps the first docs
  monkeypatch.setitem(zero_shot.HUB, "arc_easy", (str(repo), "ARC-Easy", "test"))
  assert zero_shot.load_hub_docs("arc_easy", limit=2) == splits["ARC-Easy", "test"][:2]


def test_bad_tasks_and_docs_fail_with_what_would_work(model, tmp_path):
  tokenizer = ByteTokenizer()
  with pytest.raises(ValueError, match="unknown; expected one of"):
    zero_shot.evaluate_zero_shot(model, tokenizer, {"mmlu": []})
  with pytest.raises(ValueError, match="missing.jsonl' does not exist"):
    zero_shot.evaluate_zero_shot(model, tokenizer, {"piqa": str(tmp_path / "missing.jsonl")})
  with pytest.raises(ValueError, match=r"lacks \['sol2'\]"):
    zero_shot.evaluate_zero_shot(model, tokenizer, {"piqa": [{"goal": "g", "sol1": "a",
                                                              "label": 0}]})
  with pytest.raises(ValueError, match="model.vocab_size is 256"):
    zero_shot.evaluate_zero_shot(model, ByteTokenizer(bos_id=300), {"piqa": DOCS["piqa"]})
  path = zero_shot.save_jsonl(DOCS["piqa"] * 3, str(tmp_path / "piqa.jsonl"))
  assert len(zero_shot.read_jsonl(path, limit=2)) == 2
  assert zero_shot.task_path(str(tmp_path), "social_iqa").endswith("social_iqa.jsonl")

