"""model.backend=vllm: the harness drives vLLM's offline engine in a worker process (harness/engine/vllm/worker.py).
Here the real worker runs against a stand-in for vLLM's engine (tests/fake_vllm: the tiny GPT-2 in float64, prompt
log-probabilities with ranks, greedy generation with stop strings), so the protocol, the records, the reuse of one
engine across runs, resuming after the engine died and every refusal are checked without vLLM installed; the real
vLLM is checked by benchmarks/vllm_check.py (docs/results/backends.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.engine.vllm import backend as vllm_backend
from harness.errors import HarnessError
from helpers import run_in_process, write_short_answer_task

FAKE_VLLM = Path(__file__).parent / "fake_vllm"


@pytest.fixture()
def fake_vllm(monkeypatch):
    """The stand-in on the worker's path; no engine kept from another test (each test starts its own)."""
    monkeypatch.setenv("PYTHONPATH", str(FAKE_VLLM))
    monkeypatch.delenv("FAKE_VLLM_FAIL", raising=False)
    monkeypatch.delenv("FAKE_VLLM_EXIT_AFTER", raising=False)
    yield monkeypatch
    for kept in vllm_backend._kept.values():
        kept.worker.close()
    vllm_backend._kept.clear()


def _vllm(model_dir: Path, *more: str) -> list[str]:
    return [f"model={model_dir}", "model.backend=vllm", f"model.vllm_python={sys.executable}", *more]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_classification_through_vllm_equals_the_transformers_backend(tmp_path: Path, harness_env: dict, fake_vllm,
                                                                     tiny_model_dir: Path, capsys) -> None:
    settings = ["task=toy", "shots=2", "seed=3", f"output_dir={tmp_path / 'results'}"]
    local = run_in_process(*settings, f"model={tiny_model_dir}")
    engine = run_in_process(*settings, *_vllm(tiny_model_dir))
    assert engine.run_dir.name != local.run_dir.name  # another backend is another run
    for mine, theirs in zip(_rows(engine.run_dir), _rows(local.run_dir), strict=True):
        assert mine["prediction"] == theirs["prediction"]
        for label, score in mine["scores"].items():
            assert score == pytest.approx(theirs["scores"][label], abs=1e-4)
    environment = engine.record.environment
    assert environment["device"] == "vllm:cpu" and environment["dtype"] == "float32"
    assert environment["versions"]["vllm"] == "0.0-fake"
    assert "backend: vllm" in (engine.run_dir / "config.yaml").read_text()
    again = run_in_process("task=toy", "shots=2", "seed=4", f"output_dir={tmp_path / 'results'}", *_vllm(tiny_model_dir))
    assert "reused from the previous run of this process (vLLM loaded once)" in capsys.readouterr().err
    assert again.record.metrics


def test_multiple_choice_and_greedy_flags_through_vllm(tmp_path: Path, mc_task_root: Path, fake_vllm,
                                                       tiny_model_dir: Path) -> None:
    fake_vllm.setenv("HARNESS_PATH", str(mc_task_root))
    local = run_in_process("task=toymc", f"model={tiny_model_dir}", f"output_dir={tmp_path / 'hf'}")
    engine = run_in_process("task=toymc", *_vllm(tiny_model_dir), f"output_dir={tmp_path / 'vllm'}")
    for mine, theirs in zip(_rows(engine.run_dir), _rows(local.run_dir), strict=True):
        assert mine["chosen"] == theirs["chosen"]
        assert mine["scores"] == pytest.approx(theirs["scores"], abs=1e-4)
        assert mine.get("greedy") == theirs.get("greedy")


def test_generation_through_vllm_cuts_at_the_stop_strings(tmp_path: Path, fake_vllm, tiny_model_dir: Path) -> None:
    rows = [("Paris is the capital of France", ["Paris"]), ("blue is the sky", ["blue"]), ("who wrote it", ["Kafka"]),
            ("red is the rose", ["red"])]
    root = write_short_answer_task(tmp_path, "toyqa", rows, "metrics: [exact_match]\nanswer: {until: [\" the\"], max_new_tokens: 6}\n")
    fake_vllm.setenv("HARNESS_PATH", str(root))
    settings = ["task=toyqa", "shots=1", "demos=first_n"]
    local = run_in_process(*settings, f"model={tiny_model_dir}", f"output_dir={tmp_path / 'hf'}")
    engine = run_in_process(*settings, *_vllm(tiny_model_dir), "batch_size=2", f"output_dir={tmp_path / 'vllm'}")
    assert [row["generation"] for row in _rows(engine.run_dir)] == [row["generation"] for row in _rows(local.run_dir)]


def test_an_engine_that_dies_mid_run_is_one_line_and_the_rerun_resumes(tmp_path: Path, harness_env: dict, fake_vllm,
                                                                      tiny_model_dir: Path) -> None:
    settings = ["task=toy", "shots=2", "batch_size=1", *_vllm(tiny_model_dir)]
    reference = run_in_process(*settings, f"output_dir={tmp_path / 'reference'}")
    vllm_backend._kept.clear()
    fake_vllm.setenv("FAKE_VLLM_EXIT_AFTER", "1")  # one item scored, then the engine's process is gone
    with pytest.raises(HarnessError, match=r"the vLLM worker \(.*\) stopped with exit code 3"):
        run_in_process(*settings, f"output_dir={tmp_path / 'run'}")
    fake_vllm.delenv("FAKE_VLLM_EXIT_AFTER")
    resumed = run_in_process(*settings, f"output_dir={tmp_path / 'run'}")  # the dead engine is not reused
    assert resumed.record.cost.examples_resumed == 1
    assert (resumed.run_dir / "predictions.jsonl").read_bytes() == (reference.run_dir / "predictions.jsonl").read_bytes()


def test_what_cannot_run_is_one_line(tmp_path: Path, harness_env: dict, fake_vllm, tiny_model_dir: Path) -> None:
    fake_vllm.setenv("FAKE_VLLM_FAIL", "load")
    with pytest.raises(HarnessError, match="vLLM: ValueError: cannot load"):
        run_in_process("task=toy", *_vllm(tiny_model_dir), f"output_dir={tmp_path}")
    fake_vllm.delenv("FAKE_VLLM_FAIL")
    fake_vllm.delenv("PYTHONPATH")  # this Python has no vLLM
    with pytest.raises(HarnessError, match="cannot import vLLM .* set model.vllm_python"):
        run_in_process("task=toy", *_vllm(tiny_model_dir), f"output_dir={tmp_path}")
    with pytest.raises(HarnessError, match="cannot start model.vllm_python"):
        run_in_process("task=toy", *_vllm(tiny_model_dir), f"model.vllm_python={tmp_path / 'none'}",
                       f"output_dir={tmp_path}")
    with pytest.raises(HarnessError, match="trains a soft prompt, which model.backend=vllm cannot load"):
        run_in_process("task=toy", "shots=2", "method=prompt_tuning", *_vllm(tiny_model_dir), f"output_dir={tmp_path}")
    fake_vllm.setenv("WORLD_SIZE", "2")
    with pytest.raises(HarnessError, match="model.backend=vllm runs one engine .* without accelerate launch"):
        run_in_process("task=toy", *_vllm(tiny_model_dir), f"output_dir={tmp_path}")


def test_fine_tuned_weights_are_scored_by_vllm(tmp_path: Path, harness_env: dict, fake_vllm,
                                               tiny_model_dir: Path) -> None:
    """Transformers trains (the same examples, seed and steps as with the transformers backend), vLLM loads the
    merged weights: the same training and the same scores as the run that trains and scores on transformers."""
    settings = ["task=toy", "shots=4", "method=lora", "method.steps=2", "method.learning_rate=0.05"]
    local = run_in_process(*settings, f"model={tiny_model_dir}", f"output_dir={tmp_path / 'hf'}")
    served = run_in_process(*settings, *_vllm(tiny_model_dir), f"output_dir={tmp_path / 'vllm'}")
    assert served.record.training.losses == local.record.training.losses
    base = run_in_process("task=toy", *_vllm(tiny_model_dir), f"output_dir={tmp_path / 'icl'}")  # 0-shot, as scored
    trained_rows, base_rows = _rows(served.run_dir), _rows(base.run_dir)
    assert any(mine["scores"] != theirs["scores"] for mine, theirs in zip(trained_rows, base_rows))  # trained weights
    for mine, theirs in zip(trained_rows, _rows(local.run_dir), strict=True):
        assert mine["prediction"] == theirs["prediction"]
        for label, score in mine["scores"].items():
            assert score == pytest.approx(theirs["scores"][label], abs=1e-4)
    assert not (served.run_dir / "merged").exists()  # the copy for vLLM goes once the record is written
    assert (served.run_dir / "adapter").is_dir()  # what the method saves stays (method.save_weights)
