"""The model interface is narrow: a backend of arithmetic (tests/fake_backend.py, some forty lines) runs a
classification, a multiple-choice and a short-answer task end to end, through the same planning, grouping,
batching, journal and records as the transformers backend, and gives the predictions its arithmetic says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fake_backend
from harness.engine.backend import BACKENDS, BackendSpec, register_backend
from harness.engine.request import shared_prefix_length
from harness.errors import HarnessError, RunInterrupted
from harness.inputs.prompts import build_prompt
from harness.runs.plan import choose_inputs, plan_run
from helpers import compose, run_in_process

FAKE = ["model=fake-model", "model.backend=fake"]


@pytest.fixture(autouse=True)
def fake_registered():
    register_backend(BackendSpec(name="fake", fingerprint="fake_backend:fingerprint", loader="fake_backend:load"))
    yield
    BACKENDS.pop("fake")


def _predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _expected_choices(overrides: list[str]) -> list[int]:
    """Per item, the option (or label) the fake's arithmetic ranks first: the same prompts, scored by hand."""
    plan = plan_run(compose(*overrides))
    selection = choose_inputs(plan)
    chosen = []
    for demonstrations, example in zip(selection.demonstrations, selection.examples):
        prompt = build_prompt(plan.template, demonstrations, example)
        context = list(prompt.context().encode())
        values = [fake_backend.loglikelihood(context, list(text.encode())) for text in prompt.continuations]
        chosen.append(values.index(max(values)))
    return chosen


def test_a_classification_task_through_the_engine(tmp_path: Path, harness_env: dict) -> None:
    overrides = ["task=toy", *FAKE, "shots=2", "batch_size=2", f"output_dir={tmp_path}"]
    result = run_in_process(*overrides)
    labels = ["neg", "pos"]
    assert [row["prediction"] for row in _predictions(result.run_dir)] == [labels[i] for i in _expected_choices(overrides)]
    backend = fake_backend.LOADED[-1]
    assert {calls for _, calls, _ in backend.calls} <= {1, 2}  # the engine's batches of batch_size
    plan = plan_run(compose(*overrides))
    contexts = [tuple(build_prompt(plan.template, demos, example).context().encode())
                for demos, example in zip(choose_inputs(plan).demonstrations, plan.examples)]
    assert {shared for _, _, shared in backend.calls} == {shared_prefix_length(contexts)} != {0}  # one group
    assert result.record.environment["device"] == "cpu" and result.record.metrics["accuracy"] >= 0


def test_a_multiple_choice_task_through_the_engine(tmp_path: Path, mc_task_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(mc_task_root))
    overrides = ["task=toymc", *FAKE, f"output_dir={tmp_path}"]
    result = run_in_process(*overrides)
    expected = _expected_choices(overrides)
    assert [row["chosen"]["acc"] for row in _predictions(result.run_dir)] == expected
    golds = [row["gold"] for row in _predictions(result.run_dir)]
    assert result.record.metrics["acc"] == sum(str(c) == g for c, g in zip(expected, golds)) / len(golds)


def test_a_short_answer_task_through_the_engine(tmp_path: Path, monkeypatch) -> None:
    from helpers import write_short_answer_task

    rows = [("Paris is the capital of France", ["Paris"]), ("blue is the sky", ["blue"]), ("who wrote it", ["Kafka"])]
    root = write_short_answer_task(tmp_path, "toyqa", rows, "metrics: [exact_match]\nanswer: {until: [\"\\n\"]}\n")
    monkeypatch.setenv("HARNESS_PATH", str(root))
    result = run_in_process("task=toyqa", *FAKE, "shots=1", "demos=first_n", f"output_dir={tmp_path / 'out'}")
    assert [row["generation"] for row in _predictions(result.run_dir)] == ["Paris", "blue", "who"]  # cut at "\n"
    assert result.record.metrics["exact_match"] == pytest.approx(2 / 3)
    assert fake_backend.LOADED[-1].calls[0][0] == "generate_until"


def test_a_run_interrupted_in_the_backend_resumes_from_the_journal(tmp_path: Path, harness_env: dict,
                                                                   monkeypatch) -> None:
    overrides = ["task=toy", *FAKE, "shots=2", "batch_size=1"]
    reference = run_in_process(*overrides, f"output_dir={tmp_path / 'reference'}")
    real = fake_backend.FakeBackend.loglikelihood

    def interrupted_on_the_third_batch(self, requests, shared, group=None):
        if len(self.calls) == 2:
            raise KeyboardInterrupt
        return real(self, requests, shared, group)

    monkeypatch.setattr(fake_backend.FakeBackend, "loglikelihood", interrupted_on_the_third_batch)
    with pytest.raises(RunInterrupted, match="interrupted at 2/4 examples"):
        run_in_process(*overrides, f"output_dir={tmp_path / 'stopped'}")
    monkeypatch.setattr(fake_backend.FakeBackend, "loglikelihood", real)
    resumed = run_in_process(*overrides, f"output_dir={tmp_path / 'stopped'}")
    assert resumed.record.cost.examples_resumed == 2 and len(fake_backend.LOADED[-1].calls) == 2
    assert (resumed.run_dir / "predictions.jsonl").read_bytes() == (reference.run_dir / "predictions.jsonl").read_bytes()


def test_fine_tuning_needs_a_trainable_backend(tmp_path: Path, harness_env: dict) -> None:
    with pytest.raises(HarnessError, match="model.backend=fake serves a model it cannot train"):
        run_in_process("task=toy", *FAKE, "method=lora", "shots=2", f"output_dir={tmp_path}")
    with pytest.raises(HarnessError, match=r"unknown model.backend 'nope' \(backends: fake, hf, openai, vllm\)"):
        run_in_process("task=toy", "model=fake-model", "model.backend=nope", f"output_dir={tmp_path}")
