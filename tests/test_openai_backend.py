"""model.backend=openai against a local OpenAI-compatible server (tests/openai_server.py: the tiny GPT-2 served
over HTTP): the same prompts, scores and predictions as the transformers backend on the same weights, generation
with stop strings, and the faults of a real server (busy, slow, broken, stopping, without prompt log-probabilities),
each retried or said in one line, an interrupted run resumed from its journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_server import CompletionsServer

from harness.errors import HarnessError
from helpers import report, run_in_process, write_short_answer_task


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    served = CompletionsServer(tiny_model_dir)
    yield served
    served.close()


@pytest.fixture()
def fresh(server: CompletionsServer):
    server.faults, server.prompt_logprobs, server.stop_after = [], True, None
    yield server
    server.faults, server.prompt_logprobs, server.stop_after = [], True, None


def _openai(server: CompletionsServer, model_dir: Path, *more: str) -> list[str]:
    return [f"model={model_dir}", "model.backend=openai", f"model.base_url={server.url}", "model.max_retries=2",
            "model.timeout_s=1", *more]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_classification_through_the_server_equals_the_transformers_backend(
        tmp_path: Path, harness_env: dict, fresh: CompletionsServer, tiny_model_dir: Path, capsys) -> None:
    settings = ["task=toy", "shots=2", "seed=3", f"output_dir={tmp_path / 'results'}"]
    local = run_in_process(*settings, f"model={tiny_model_dir}")
    served = run_in_process(*settings, *_openai(fresh, tiny_model_dir))
    assert served.run_dir.name != local.run_dir.name  # another backend is another run
    for mine, theirs in zip(_rows(served.run_dir), _rows(local.run_dir), strict=True):
        assert mine["prediction"] == theirs["prediction"]
        for label, score in mine["scores"].items():
            assert score == pytest.approx(theirs["scores"][label], abs=1e-4)
    assert served.record.environment["device"] == fresh.url
    config = (served.run_dir / "config.yaml").read_text()
    assert "backend: openai" in config and "api_key" not in config.replace("api_key_env: null", "")
    code, _, _ = report(capsys, tmp_path / "results")  # the two backends side by side, told apart by the backend
    board = (tmp_path / "results" / "report" / "leaderboard.csv").read_text()
    assert code == 0 and "model.backend" in board and "openai" in board and "base_url" not in board


def test_multiple_choice_through_the_server(tmp_path: Path, mc_task_root: Path, fresh: CompletionsServer,
                                            tiny_model_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    local = run_in_process("task=toymc", f"model={tiny_model_dir}", f"output_dir={tmp_path / 'hf'}")
    served = run_in_process("task=toymc", *_openai(fresh, tiny_model_dir), f"output_dir={tmp_path / 'openai'}")
    for mine, theirs in zip(_rows(served.run_dir), _rows(local.run_dir), strict=True):
        assert mine["chosen"] == theirs["chosen"]
        assert mine["scores"] == pytest.approx(theirs["scores"], abs=1e-4)


def test_generation_through_the_server_cuts_at_the_stop_strings(tmp_path: Path, fresh: CompletionsServer,
                                                                tiny_model_dir: Path, monkeypatch) -> None:
    rows = [("Paris is the capital of France", ["Paris"]), ("blue is the sky", ["blue"]), ("who wrote it", ["Kafka"]),
            ("red is the rose", ["red"])]
    root = write_short_answer_task(tmp_path, "toyqa", rows, "metrics: [exact_match]\nanswer: {until: [\" the\"], max_new_tokens: 6}\n")
    monkeypatch.setenv("HARNESS_PATH", str(root))
    settings = ["task=toyqa", "shots=1", "demos=first_n"]
    local = run_in_process(*settings, f"model={tiny_model_dir}", f"output_dir={tmp_path / 'hf'}")
    fresh.most_in_flight = 0
    served = run_in_process(*settings, *_openai(fresh, tiny_model_dir), "batch_size=2", f"output_dir={tmp_path / 'openai'}")
    assert [row["generation"] for row in _rows(served.run_dir)] == [row["generation"] for row in _rows(local.run_dir)]
    assert fresh.most_in_flight == 2  # batch_size's rows decoded at once, though model.concurrency allows 8


def test_busy_and_slow_answers_are_retried_with_the_same_result(tmp_path: Path, harness_env: dict,
                                                                 fresh: CompletionsServer, tiny_model_dir: Path) -> None:
    settings = ["task=toy", "shots=2", *_openai(fresh, tiny_model_dir), "model.concurrency=1"]
    calm = run_in_process(*settings, f"output_dir={tmp_path / 'calm'}")
    fresh.faults = ["500", "429", "ok", "garbage", "hang", "ok", "500"]  # at most two in a row: max_retries=2
    fresh.hang_s = 2.0  # past the 1 s timeout
    stormy = run_in_process(*settings, f"output_dir={tmp_path / 'stormy'}")
    assert fresh.faults == []
    assert [row["scores"] for row in _rows(stormy.run_dir)] == [row["scores"] for row in _rows(calm.run_dir)]


def test_a_server_that_keeps_failing_stops_the_run_in_one_line(tmp_path: Path, harness_env: dict,
                                                                fresh: CompletionsServer, tiny_model_dir: Path) -> None:
    fresh.faults = ["500"] * 3
    with pytest.raises(HarnessError, match=r"the server at .* failed 3 times \(last: HTTP 500"):
        run_in_process("task=toy", "shots=2", *_openai(fresh, tiny_model_dir, "model.concurrency=1"),
                       f"output_dir={tmp_path}")


def test_a_server_without_prompt_logprobs_is_refused_for_scoring(tmp_path: Path, harness_env: dict,
                                                                  fresh: CompletionsServer, tiny_model_dir: Path) -> None:
    fresh.prompt_logprobs = False
    with pytest.raises(HarnessError, match="did not return the prompt's log-probabilities .* only generate"):
        run_in_process("task=toy", "shots=2", *_openai(fresh, tiny_model_dir), f"output_dir={tmp_path}")


def test_a_directory_with_only_the_tokenizer_is_enough(tmp_path: Path, harness_env: dict, fresh: CompletionsServer,
                                                        tiny_model_dir: Path) -> None:
    """The weights are the server's: the harness reads (and fingerprints) the tokenizer's files alone."""
    from transformers import AutoTokenizer

    tokenizer_dir = tmp_path / "tokenizer"
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tokenizer_dir)
    local = run_in_process("task=toy", "shots=2", f"model={tiny_model_dir}", f"output_dir={tmp_path / 'hf'}")
    served = run_in_process("task=toy", "shots=2", *_openai(fresh, tokenizer_dir), f"output_dir={tmp_path / 'openai'}")
    assert [row["prediction"] for row in _rows(served.run_dir)] == [row["prediction"] for row in _rows(local.run_dir)]
    with pytest.raises(HarnessError, match="has no tokenizer files"):
        run_in_process("task=toy", *_openai(fresh, tmp_path / "hf"), f"output_dir={tmp_path / 'none'}")


def test_a_wrong_model_name_or_no_server_is_one_line_at_planning(tmp_path: Path, harness_env: dict,
                                                                  fresh: CompletionsServer, tiny_model_dir: Path) -> None:
    with pytest.raises(HarnessError, match=r"does not serve 'other' \(it serves: served-model\)"):
        run_in_process("task=toy", *_openai(fresh, tiny_model_dir), "model.api_model=other", f"output_dir={tmp_path}")
    with pytest.raises(HarnessError, match="model.backend=openai needs model.base_url"):
        run_in_process("task=toy", f"model={tiny_model_dir}", "model.backend=openai", f"output_dir={tmp_path}")
    with pytest.raises(HarnessError, match="model.backend=openai serves a model it cannot train"):
        run_in_process("task=toy", "shots=2", "method=lora", *_openai(fresh, tiny_model_dir), f"output_dir={tmp_path}")


def test_a_server_that_stops_mid_run_resumes_from_the_journal(tmp_path: Path, harness_env: dict,
                                                               tiny_model_dir: Path) -> None:
    reference_server = CompletionsServer(tiny_model_dir)
    settings = ["task=toy", "shots=2", "batch_size=1", "model.concurrency=1", "model.max_retries=1"]
    try:
        reference = run_in_process(*settings, *_openai(reference_server, tiny_model_dir)[:-2],
                                   f"output_dir={tmp_path / 'reference'}")
        reference_server.completions, reference_server.stop_after = 0, 2  # one item's two labels, then it is gone
        with pytest.raises(HarnessError, match="failed 2 times"):
            run_in_process(*settings, *_openai(reference_server, tiny_model_dir)[:-2], f"output_dir={tmp_path / 'run'}")
    finally:
        reference_server.close()
    restarted = CompletionsServer(tiny_model_dir)
    try:
        resumed = run_in_process(*settings, *_openai(restarted, tiny_model_dir)[:-2], f"output_dir={tmp_path / 'run'}")
    finally:
        restarted.close()
    assert resumed.record.cost.examples_resumed == 1
    assert (resumed.run_dir / "predictions.jsonl").read_bytes() == (reference.run_dir / "predictions.jsonl").read_bytes()


# the toy 4-shot prompts, demonstrations dropped to fit, reach this window's last token: one more (no room for the
# token a scoring request asks the server to generate) and the server refuses it, as checked with that room removed
WINDOW = 50


def test_prompts_fill_the_servers_context_window_and_no_more(tmp_path: Path, harness_env: dict,
                                                              tiny_model_dir: Path) -> None:
    """The window is the server's max_model_len, less the one token a scoring request asks it to generate."""
    narrow = CompletionsServer(tiny_model_dir, max_model_len=WINDOW)
    try:
        result = run_in_process("task=toy", "shots=4", *_openai(narrow, tiny_model_dir), f"output_dir={tmp_path}")
    finally:
        narrow.close()
    assert any(row["dropped_demos"] for row in _rows(result.run_dir))  # demonstrations dropped to fit
