"""Run records <-> lm-evaluation-harness's results files (the layout of its 0.4 releases).

Writing: with `lmeval_results=true`, a run also leaves `lm-eval/results_<time>.json` (results, configs,
versions, n-shot, higher-is-better, n-samples, config) and `lm-eval/samples_<task>_<time>.jsonl` (one line
per test item: doc, target, responses, filter, per-item metrics) in its directory, so tools that read
lm-evaluation-harness output read ours. The prompts are not repeated there (the run's config names the
template that builds them), so a sample has no `arguments`.

Reading: `python -m harness report` also reads lm-evaluation-harness results files (under the results
directory, outside run directories, or named with lmeval=PATH): one row per task, as a run of the model
"<name> (lm-eval <version>)" with template "lm-eval", so they sit beside the harness's runs on the
leaderboard and are never averaged with them. The samples file next to a results file gives the per-item
correctness the paired tests need.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.errors import HarnessError
from harness.files import jsonl_text, write_json, write_text_atomic
from harness.inputs.registry import read_task_file, task_files
from harness.runs.records import RunRecord

FOLDER = "lm-eval"
SOURCE_MARK = "::"  # run_dir of an imported task: "<results file>::<task>"
TEMPLATE = "lm-eval"
# the harness's metric names -> lm-evaluation-harness's (the others are spelled the same)
TO_LMEVAL = {"accuracy": "acc", "macro_f1": "f1"}
LOWER_IS_BETTER = {"perplexity", "bits_per_byte", "ece", "no_label_rate"}
PER_ITEM = {"accuracy", "acc", "acc_norm", "acc_bytes", "acc_mutual_info", "exact_match"}  # a right/wrong per item
OUTPUT_TYPES = {"classify": "multiple_choice", "choice": "multiple_choice", "cloze": "loglikelihood",
                "generate": "generate_until"}


def write_lmeval_results(run_dir: Path, record: RunRecord, resolved: dict[str, Any], fields: dict[str, dict],
                         rows: list[dict[str, Any]]) -> Path:
    """The run as lm-evaluation-harness writes one: `fields` gives each test item's input fields by id, `rows`
    are predictions.jsonl's lines. Returns the results file."""
    task = record.task
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime())
    kind = resolved["task"].get("kind") or "classify"
    output_type = "generate_until" if record.scorer == "generate" else OUTPUT_TYPES.get(str(kind), "multiple_choice")
    metrics = {TO_LMEVAL.get(name, name): value for name, value in record.metrics.items()
               if not name.startswith("uncalibrated")}
    results = {"alias": task, **{f"{name},none": value for name, value in metrics.items()}}
    for name, value in record.stderr.items():
        results[f"{TO_LMEVAL.get(name, name)}_stderr,none"] = value
    payload = {
        "results": {task: results},
        "group_subtasks": {task: []},
        "configs": {task: {
            "task": task, "dataset_path": resolved["task"].get("source"), "test_split": resolved["task"]["eval_split"],
            "fewshot_split": resolved["task"]["demo_split"], "num_fewshot": record.shots, "output_type": output_type,
            "metric_list": [{"metric": name, "aggregation": "mean", "higher_is_better": name not in LOWER_IS_BETTER}
                            for name in metrics],
            "repeats": 1,
            "metadata": {"version": 1.0, "harness_template": record.template, "harness_method": record.method,
                         "harness_run_key": record.run_key, "harness_calibration": record.calibration},
        }},
        "versions": {task: 1.0},
        "n-shot": {task: record.shots},
        "higher_is_better": {task: {name: name not in LOWER_IS_BETTER for name in metrics}},
        "n-samples": {task: {"original": record.n, "effective": record.n}},
        "config": {"model": "harness", "model_args": {"pretrained": resolved["model"]["path"],
                                                      "name": record.model},
                   "batch_size": resolved.get("batch_size"), "device": record.environment.get("device"),
                   "limit": resolved.get("limit"), "random_seed": record.seed, "fewshot_seed": record.seed},
        "git_hash": record.environment.get("git_commit"),
        "date": time.time(),
        "transformers_version": record.environment.get("versions", {}).get("transformers"),
        "lm_eval_version": None,
        "harness_version": record.environment.get("versions", {}).get("harness"),
        "model_name": record.model,
        "model_name_sanitized": record.model.replace("/", "__"),
        "total_evaluation_time_seconds": str(record.cost.wall_time_s),
    }
    folder = run_dir / FOLDER
    for earlier in folder.glob("*_*.json*") if folder.is_dir() else ():  # the files of an earlier write: replaced
        earlier.unlink()
    results_file = folder / f"results_{stamp}.json"
    samples = [_sample(index, row, fields.get(row["id"], {}), record) for index, row in enumerate(rows)]
    write_text_atomic(folder / f"samples_{task}_{stamp}.jsonl", jsonl_text(samples))
    write_json(results_file, payload)
    return results_file


def _sample(index: int, row: dict[str, Any], fields: dict, record: RunRecord) -> dict[str, Any]:
    doc = {**fields, "id": row["id"], "gold": row["gold"]}
    if "target" in row:  # cloze: the target's log-likelihood and whether it is the greedy continuation
        responses: list = [[str(row["loglikelihood"]), str(row["greedy"])]]
    elif "generation" in row:
        responses = [row["generation"]]
    elif isinstance(row.get("scores"), dict):  # a label's score each
        responses = [[str(value), "False"] for value in row["scores"].values()]
    else:
        responses = [[str(value), "False"] for value in row.get("scores", [])]
    target = row.get("target", row["gold"])
    sample = {"doc_id": index, "doc": doc, "target": target, "resps": [[r] for r in responses],
              "filtered_resps": responses, "filter": "none", "metrics": [],
              "doc_hash": _sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False)),
              "target_hash": _sha256(str(target))}
    for name in record.metrics:
        if name in PER_ITEM:
            chosen = row.get("chosen", {}).get(name, row["prediction"])
            sample[TO_LMEVAL.get(name, name)] = float(str(chosen) == str(row["gold"]) and chosen is not None)
            sample["metrics"].append(TO_LMEVAL.get(name, name))
    return sample


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -----------------------------------------------------------------------------
# reading lm-evaluation-harness's files


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
        if any((results_dir / parent / "metrics.json").is_file() for parent in parents):
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
        classify = _is_classification(task)
        metrics, errors = {}, {}
        for key, value in values.items():
            name, _, _ = key.partition(",")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            target = errors if name.endswith("_stderr") else metrics
            name = name.removesuffix("_stderr")
            if classify:
                name = {"acc": "accuracy", "f1": "macro_f1"}.get(name, name)
            target.setdefault(name, float(value))
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


def _is_classification(task: str) -> bool:
    """Whether the harness has a classification task of this name: its accuracy is lm-evaluation-harness's acc."""
    path = task_files().get(task)
    if path is None:
        return False
    try:
        return (read_task_file(path).get("kind") or "classify") == "classify"
    except HarnessError:  # an unreadable task file is reported where the task is used, not here
        return False


def load_samples(source: str, metric: str) -> pd.DataFrame | None:
    """id, gold and prediction per item of an imported task, from the samples file beside its results file:
    "right" when the item counted as right for `metric`, else "wrong"; None without a samples file."""
    results_path, _, task = source.partition(SOURCE_MARK)
    path = Path(results_path)
    stamp = path.stem.removeprefix("results_")
    samples = path.parent / f"samples_{task}_{stamp}.jsonl"
    if not samples.is_file():
        return None
    classify = _is_classification(task)
    name = TO_LMEVAL.get(metric, metric) if classify or metric in TO_LMEVAL else metric
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
