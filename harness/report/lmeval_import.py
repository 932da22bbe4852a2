"""lm-evaluation-harness's results files -> run rows for the report (the layout of its 0.4 releases).

`python -m harness report` also reads lm-evaluation-harness results files (under the results directory, outside
run directories, or named with lmeval=PATH): one row per task, as a run of the model "<name> (lm-eval
<version>)" with template "lm-eval", so they sit beside the harness's runs on the leaderboard and are never
averaged with them. The samples file next to a results file gives the per-item correctness the paired tests
need. A task the harness also has gets its metrics under the harness's names (lm-evaluation-harness's acc is
a classification task's accuracy: harness/runs/lmeval_export.py writes them so).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.errors import HarnessError
from harness.inputs.registry import load_task_node, task_files
from harness.runs.lmeval_export import exported
from harness.runs.records import RECORD_FILE

SOURCE_MARK = "::"  # run_dir of an imported task: "<results file>::<task>"
TEMPLATE = "lm-eval"


@dataclass(frozen=True)
class ImportProblem:
    path: Path
    reason: str


def find_results_files(results_dir: Path) -> list[Path]:
    """results_*.json files under results_dir, except those inside the harness's own run directories (the
    files lmeval_results=true writes there repeat the run's record) and hidden directories."""
    found = []
    for path in sorted(results_dir.rglob("results_*.json")):
        parents = path.relative_to(results_dir).parents
        if any(part.startswith(".") for part in path.relative_to(results_dir).parts):
            continue
        if any((results_dir / parent / RECORD_FILE).is_file() for parent in parents):
            continue
        found.append(path)
    return found


def read_results_file(path: Path) -> list[dict[str, Any]]:
    """One row per task (a group's subtasks are left to the group's own row), in the columns the report's
    run table has; raises ValueError when the file is not an lm-evaluation-harness results file."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"cannot be read as JSON ({error})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), dict) or "n-shot" not in payload:
        raise ValueError("not an lm-evaluation-harness results file (no results and n-shot)")
    subtasks = {name for members in (payload.get("group_subtasks") or {}).values() for name in members}
    model = _model_label(payload)
    tasks = [task for task in payload["results"] if task not in subtasks]
    rows = []
    for task in tasks:
        values = payload["results"][task]
        names = _harness_names(task)
        metrics, errors = {}, {}
        for key, value in values.items():
            name, _, _ = key.partition(",")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            target = errors if name.endswith("_stderr") else metrics
            name = name.removesuffix("_stderr")
            target.setdefault(names.get(name, name), float(value))
        samples = payload.get("n-samples", {}).get(task, {})
        rows.append({
            "task": task, "model": model, "method": "icl", "template": TEMPLATE, "scorer": "rank",
            "calibration": "none", "shots": int(payload["n-shot"].get(task, 0) or 0),
            "seed": int(payload.get("config", {}).get("fewshot_seed") or 0),
            "metrics": metrics, "stderr": errors, "n": int(samples.get("effective", 0) or 0),
            # the file times all its tasks together: a task's own time is known only when it is alone
            "wall_time_s": float(payload.get("total_evaluation_time_seconds") or math.nan) if len(tasks) == 1
            else math.nan,
            "run_key": _sha256(f"{path.resolve()}{SOURCE_MARK}{task}")[:10],
            "run_dir": f"{path}{SOURCE_MARK}{task}",
            "lmeval_task": task,
        })
    return rows


def _model_label(payload: dict[str, Any]) -> str:
    config = payload.get("config") or {}
    arguments = config.get("model_args")
    if isinstance(arguments, str):  # "pretrained=...,dtype=..." in older files
        arguments = dict(part.split("=", 1) for part in arguments.split(",") if "=" in part)
    name = str((arguments or {}).get("name") or (arguments or {}).get("pretrained") or payload.get("model_name")
               or "model")
    if Path(name).is_absolute():  # a local checkpoint: its folder's name, not the whole path
        name = Path(name).name
    version = payload.get("lm_eval_version")
    return f"{name} (lm-eval{f' {version}' if version else ''})"


def _harness_names(task: str) -> dict[str, str]:
    """lm-evaluation-harness's name -> the harness's, of the metrics the harness's task of this name records (none
    when it has no such task)."""
    path = task_files().get(task)
    if path is None:
        return {}
    try:
        return {exported(name): name for name in load_task_node(path).metrics}
    except HarnessError:  # an unreadable task file is reported where the task is used, not here
        return {}


def load_samples(source: str, metric: str) -> pd.DataFrame | None:
    """id, gold and prediction per item of an imported task, from the samples file beside its results file:
    "right" when the item counted as right for `metric`, else "wrong"; None without a samples file."""
    results_path, _, task = source.partition(SOURCE_MARK)
    path = Path(results_path)
    stamp = path.stem.removeprefix("results_")
    samples = path.parent / f"samples_{task}_{stamp}.jsonl"
    if not samples.is_file():
        return None
    name = exported(metric)
    rows = []
    for line in samples.read_text(encoding="utf-8").splitlines():
        if line.strip():
            sample = json.loads(line)
            if name not in sample:
                return None
            rows.append({"id": str(sample["doc_id"]), "gold": "right",
                         "prediction": "right" if sample[name] == 1 else "wrong"})
    return pd.DataFrame(rows)


def is_imported(run_dir: str) -> bool:
    return SOURCE_MARK in run_dir


def iter_imports(results_dir: Path, extra: Iterable[Path]) -> tuple[list[dict[str, Any]], list[ImportProblem]]:
    """Rows of every lm-evaluation-harness results file found under results_dir or named in `extra` (a file,
    or a folder searched like results_dir), and the files that could not be read."""
    paths = find_results_files(results_dir) if results_dir.is_dir() else []
    for path in extra:
        paths += [path] if path.is_file() else find_results_files(path)
    rows, problems = [], []
    for path in dict.fromkeys(paths):
        try:
            rows += read_results_file(path)
        except ValueError as error:
            problems.append(ImportProblem(path, str(error)))
    return rows, problems


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
