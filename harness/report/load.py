"""Run records on disk -> one pandas DataFrame, one row per complete, valid run.

A run directory is a direct child of the results directory holding metrics.json (written last, so
it marks a complete run). Hidden directories (Hydra's `.multirun` bookkeeping) are skipped. Every
record is checked before it counts: metrics.json must be a valid record with finite metrics, and
predictions.jsonl must be the very file the run wrote (its sha256 is in the record), so a damaged,
cut or hand-edited file is left out and named, never averaged in. Of two records with the same
settings whose inputs differ (a template or data file edited between them), only the newer counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.errors import HarnessError
from harness.inputs.safeyaml import read_yaml_file
from harness.metrics.registry import UNCALIBRATED, reported
from harness.report.lmeval_import import is_imported, iter_imports, load_samples
from harness.runs.records import (
    CONFIG_FILE,
    HASH_EXCLUDED,
    MODEL_HASH_EXCLUDED,
    PREDICTIONS_FILE,
    RECORD_FILE,
    RUN_DIR_NAME,
    RecordError,
    RunRecord,
    read_run,
)

# What a run is: every report groups by these, and a row of the table is their combination minus seed.
IDENTITY = ("task", "model", "method", "template", "scorer", "calibration", "shots", "seed")
TRAINING_COLUMNS = ("train_time_s", "train_flops", "trainable_parameters", "total_parameters")
# config.yaml keys that never tell two experiments apart: the identity columns say the same (template
# is null in the config when the task's default was used), or they cannot change the numbers.
NOT_SETTINGS = {*HASH_EXCLUDED, *(f"model.{key}" for key in MODEL_HASH_EXCLUDED), "seed", "shots", "template", "scorer",
                "calibration", "task.name", "model.name", "method.name", "method.save_weights"}

ABSENT_SETTING = "(absent)"  # a config key an older record lacks: the setting was added since


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class Records:
    runs: pd.DataFrame  # one row per valid run: IDENTITY, metrics, costs, run_dir, run_key
    settings: pd.DataFrame  # the same rows: every config.yaml key flattened (demos, method.steps, ...), as text
    incomplete: int  # run directories without metrics.json: still running, or interrupted
    skipped: list[Skipped]  # complete-looking records left out, and why
    # per model: its runs that rendered plain prompts though its tokenizer has a chat template
    plain_with_chat_template: dict[str, int] = field(default_factory=dict)


def load_records(results_dir: Path, lmeval_paths: Sequence[Path] = ()) -> Records:
    """The harness's run records under results_dir, and as runs too the tasks of lm-evaluation-harness results
    files found there (outside run directories) or in lmeval_paths."""
    if not results_dir.is_dir():
        raise HarnessError(f"results directory '{results_dir}' does not exist")
    missing = [path for path in lmeval_paths if not path.exists()]
    if missing:
        raise HarnessError(f"lm-evaluation-harness results '{missing[0]}' do not exist")
    directories = sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    complete = [d for d in directories if (d / RECORD_FILE).is_file()]
    loaded: list[tuple[Path, RunRecord, dict[str, str]]] = []
    skipped: list[Skipped] = []
    for run_dir in complete:
        try:
            record = read_run(run_dir)
            settings = _flatten(_read_yaml(run_dir / CONFIG_FILE))
        except RecordError as error:
            skipped.append(Skipped(run_dir, f"{error} (the same `run` command scores it again)"))
            continue
        loaded.append((run_dir, record, settings))
    loaded, superseded = _newest_inputs(loaded)
    skipped += superseded
    imported, problems = iter_imports(results_dir, lmeval_paths)
    skipped += [Skipped(problem.path, problem.reason) for problem in problems]
    if not loaded and not imported:
        reasons = f"; left out: {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        raise HarnessError(f"no valid run records in '{results_dir}' (a run directory holds metrics.json once its run "
                           f"is complete){reasons}")
    incomplete = sum(1 for d in set(directories) - set(complete) if RUN_DIR_NAME.search(d.name))
    rows = [_run_row(d, r) for d, r, _ in loaded] + [_imported_row(row) for row in imported]
    columns = reported([name for row in rows for name in row["metrics"]])  # every metric some run recorded
    rows = [_flat_row(row, columns) for row in rows]
    settings = [s for _, _, s in loaded] + [{} for _ in imported]
    plain_with_chat_template: dict[str, int] = {}
    for _, record, own in loaded:
        if record.environment.get("chat_templates") and own.get("chat_template", "false") == "false":
            plain_with_chat_template[record.model] = plain_with_chat_template.get(record.model, 0) + 1
    return Records(runs=pd.DataFrame(rows),
                   settings=pd.DataFrame(settings, index=range(len(rows))).fillna(ABSENT_SETTING),
                   incomplete=incomplete, skipped=skipped, plain_with_chat_template=plain_with_chat_template)


def load_predictions(run_dir: str, metric: str = "accuracy") -> pd.DataFrame | None:
    """id, gold and prediction (a label name, or None when a generation named no label) per test item; for a
    multiple-choice run, the option `metric` chose (acc, acc_norm, acc_bytes or acc_mutual_info), as text like gold."""
    if is_imported(run_dir):
        return load_samples(run_dir, metric)
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.DataFrame([{"id": str(r["id"]), "gold": r["gold"],
                          "prediction": str(r["chosen"][metric]) if metric in r.get("chosen", {}) else r["prediction"]}
                         for r in rows])


def as_text(value: Any) -> str:
    """How a value is written on the command line: `shots=4`, `demos=balanced`, `limit=null`, `rerun=true`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _newest_inputs(loaded: list[tuple[Path, RunRecord, dict[str, str]]]) -> tuple[list, list[Skipped]]:
    """Of records with the same settings and seed but different inputs, the newest (by metrics.json's time):
    the others were made from a template, task, data or model that has changed since."""
    newest: dict[str, tuple[Path, RunRecord, dict[str, str]]] = {}
    skipped = []
    order = sorted(loaded, key=lambda item: (item[0] / RECORD_FILE).stat().st_mtime_ns, reverse=True)
    for item in order:
        run_dir, record, settings = item
        same = json.dumps([[as_text(getattr(record, key)) for key in IDENTITY], settings], sort_keys=True)
        if same in newest:
            kept_dir, kept, _ = newest[same]
            changed = [name for name, value in vars(record.inputs).items() if vars(kept.inputs)[name] != value]
            skipped.append(Skipped(run_dir, f"superseded by {kept_dir.name}: same settings, changed "
                                            f"{', '.join(changed) or 'inputs'} since"))
        else:
            newest[same] = item
    kept = set(id(item) for item in newest.values())
    return [item for item in loaded if id(item) in kept], skipped


def _run_row(run_dir: Path, record: RunRecord) -> dict[str, Any]:
    training = vars(record.training) if record.training else {}
    return {
        **{key: getattr(record, key) for key in IDENTITY},
        # a calibrated run also records its metrics before calibration (same scores): both sides of the comparison
        "metrics": {**record.metrics, **{f"{UNCALIBRATED}{name}": value for name, value in
                                         (record.uncalibrated or {}).items()}},
        "stderr": record.stderr,
        "n": record.n,
        "wall_time_s": record.cost.wall_time_s,
        "tokens_forwarded": record.cost.tokens_forwarded,
        "peak_memory_mb": record.cost.peak_memory_mb,
        "inference_tokens_per_example": record.cost.inference_tokens_per_example,
        **{key: training.get(key) for key in TRAINING_COLUMNS},
        "run_key": record.run_key,
        "run_dir": str(run_dir),
    }


def _imported_row(row: dict[str, Any]) -> dict[str, Any]:
    """An lm-evaluation-harness task as a run row: what its file says, NaN for what it does not record."""
    return {
        **{key: row[key] for key in IDENTITY},
        "metrics": row["metrics"], "stderr": row["stderr"],
        "n": row["n"], "wall_time_s": row["wall_time_s"], "tokens_forwarded": None, "peak_memory_mb": None,
        "inference_tokens_per_example": None, **{key: None for key in TRAINING_COLUMNS},
        "run_key": row["run_key"], "run_dir": row["run_dir"],
    }


def _flat_row(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A run row with a column per metric, and one per metric's standard error (`<metric>_se`)."""
    metrics, stderr = row.pop("metrics"), row.pop("stderr")
    identity = {key: row.pop(key) for key in IDENTITY}
    return {**identity, **{name: metrics.get(name) for name in columns},
            **{f"{name}_se": stderr.get(name) for name in columns if not name.startswith(UNCALIBRATED)}, **row}


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The runs' metric columns, in the registry's order."""
    return reported([column for column in runs.columns if not column.endswith("_se")])


def _read_yaml(path: Path) -> dict[str, Any]:
    try:  # bounded: a results directory may come from someone else
        loaded = read_yaml_file(path, CONFIG_FILE) or {}
    except HarnessError as error:
        raise RecordError(str(error).replace(f" {path}", "")) from None
    if not isinstance(loaded, dict):
        raise RecordError("config.yaml does not hold a mapping")
    return loaded


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif f"{prefix}{key}" not in NOT_SETTINGS:
            flat[f"{prefix}{key}"] = as_text(value)
    return flat
