"""The generation scorer: parsing outputs to labels, and a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_record, run_cli
from harness.generation import parse_label


@pytest.mark.parametrize("text,expected", [
    (" positive", 1), ("Positive.", 1), (" negative\\nReview: more", 0), ("  very good indeed", 2),
    (" positively", None), ("I think positive", None), ("", None),
])
def test_parse_label(text: str, expected: int | None) -> None:
    assert parse_label(text.replace("\\n", "\n"), ["negative", "positive", "very good", "very"]) == expected


def test_generation_run_records_texts_and_unparsed_outputs(tmp_path: Path, harness_env: dict,
                                                          tiny_model_dir: Path) -> None:
    done = run_cli("run", "task=toy", f"model={tiny_model_dir}", "scorer=generate", "max_new_tokens=3", "shots=2",
                   "batch_size=auto", f"output_dir={tmp_path}", env=harness_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [run_dir] = tmp_path.glob("toy__tiny-gpt2__icl__2shot__*")
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").open()]
    metrics = read_record(run_dir).metrics
    assert all("generation" in row and row["prediction"] in {None, "neg", "pos"} for row in rows)
    assert metrics["no_label_rate"] == sum(row["prediction"] is None for row in rows) / len(rows)
    assert metrics["accuracy"] == sum(row["prediction"] == row["gold"] for row in rows) / len(rows)
