"""Run records on disk -> one pandas DataFrame, one row per complete run.

A run directory is a direct child of the results directory holding metrics.json (written last, so
it marks a complete run). Hidden directories (Hydra's `.multirun` bookkeeping) are skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.errors import HarnessError
from harness.records import HASH_EXCLUDED

# What a run is: every report groups by these, and a row of the table is their combination minus seed.
IDENTITY = ("task", "model", "method", "template", "scorer", "calibration", "shots", "seed")
# Records written before the scorer and calibration settings existed used these.
IDENTITY_DEFAULTS = {"scorer": "rank", "calibration": "none"}
METRIC_COLUMNS = ("accuracy", "macro_f1", "ece", "uncalibrated_accuracy", "uncalibrated_ece")
# A calibrated run also records its metrics before calibration (same scores): both sides of the comparison.
UNCALIBRATED = {"uncalibrated_accuracy": "accuracy", "uncalibrated_ece": "ece"}
TRAINING_COLUMNS = ("train_time_s", "train_flops", "trainable_parameters", "total_parameters")
# config.yaml keys that never tell two experiments apart: the identity columns say the same (template
# is null in the config when the task's default was used), or they cannot change the numbers.
NOT_SETTINGS = {*HASH_EXCLUDED, "seed", "shots", "template", "scorer", "calibration", "task.name", "model.name",
                "method.name", "method.save_weights"}

ABSENT_SETTING = "(absent)"  # a config key an older record lacks: the setting was added since
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when built: ~10x faster on big sweeps
RUN_DIR_NAME = re.compile(r"__-?\d+shot__seed-?\d+__[0-9a-f]{10}$")  # harness.records.run_dir_name


@dataclass(frozen=True)
class Records:
    runs: pd.DataFrame  # one row per complete run: IDENTITY, metrics, costs, run_dir, config_hash
    settings: pd.DataFrame  # the same rows: every config.yaml key flattened (demos, method.steps, ...), as text
    incomplete: int  # run directories without metrics.json: still running, or interrupted


def load_records(results_dir: Path) -> Records:
    if not results_dir.is_dir():
        raise HarnessError(f"results directory '{results_dir}' does not exist")
    directories = sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    complete = [d for d in directories if (d / "metrics.json").is_file()]
    if not complete:
        raise HarnessError(f"no run records in '{results_dir}' (a run directory holds metrics.json once its run "
                           "is complete)")
    rows = [_run_row(d) for d in complete]
    settings = [_flatten(_read_yaml(d / "config.yaml")) for d in complete]
    incomplete = sum(1 for d in set(directories) - set(complete) if RUN_DIR_NAME.search(d.name))
    return Records(runs=pd.DataFrame(rows), settings=pd.DataFrame(settings).fillna(ABSENT_SETTING),
                   incomplete=incomplete)


def load_predictions(run_dir: str) -> pd.DataFrame | None:
    """id, gold and prediction (a label name, or None when a generation named no label) per test item."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.DataFrame([{"id": str(r["id"]), "gold": r["gold"], "prediction": r["prediction"]} for r in rows])


def as_text(value: Any) -> str:
    """How a value is written on the command line: `shots=4`, `demos=balanced`, `limit=null`, `rerun=true`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _run_row(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        training = record.get("training") or {}
        row = {key: record.get(key, IDENTITY_DEFAULTS.get(key)) for key in IDENTITY}
        missing = [key for key in IDENTITY if row[key] is None and key != "template"]
    except (OSError, ValueError, AttributeError) as error:
        raise HarnessError(f"cannot read run record {path}: {error}") from None
    if missing:
        raise HarnessError(f"{path} is not a run record (no {', '.join(missing)})")
    return {
        **row,
        **{key: record.get(key) for key in METRIC_COLUMNS if key not in UNCALIBRATED},
        **{key: (record.get("uncalibrated") or {}).get(name) for key, name in UNCALIBRATED.items()},
        "n": record.get("n"),
        "wall_time_s": record.get("wall_time_s"),
        "inference_tokens_per_example": record.get("inference_tokens_per_example"),
        **{key: training.get(key) for key in TRAINING_COLUMNS},
        "config_hash": record.get("config_hash"),
        "run_dir": str(run_dir),
    }


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER) or {}
    except yaml.YAMLError as error:
        raise HarnessError(f"cannot read {path}: {str(error).splitlines()[0]}") from None


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif f"{prefix}{key}" not in NOT_SETTINGS:
            flat[f"{prefix}{key}"] = as_text(value)
    return flat
