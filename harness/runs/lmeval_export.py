"""Run records -> lm-evaluation-harness's results files (the layout of its 0.4 releases).

With `lmeval_results=true`, a run also leaves `lm-eval/results_<time>.json` (results, configs,
versions, n-shot, higher-is-better, n-samples, config) and `lm-eval/samples_<task>_<time>.jsonl` (one line
per test item: doc, target, responses, filter, per-item metrics) in its directory, so tools that read
lm-evaluation-harness output read ours. The prompts are not repeated there (the run's config names the
template that builds them), so a sample has no `arguments`. Metric names, their direction and the task's
output type come from the registries (harness/metrics/registry.py, harness/kinds/); the report reads such files
back with harness/report/lmeval_import.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from harness.files import jsonl_text, write_json, write_text_atomic
from harness.kinds.base import task_kind
from harness.metrics.registry import higher_is_better, metric
from harness.runs.records import RunRecord

FOLDER = "lm-eval"


def exported(name: str) -> str:
    """A metric's name in lm-evaluation-harness's files (accuracy is its acc, macro_f1 its f1)."""
    known = metric(name)
    return name if known is None else known.exported_name


def write_lmeval_results(run_dir: Path, record: RunRecord, resolved: dict[str, Any], fields: dict[str, dict],
                         rows: list[dict[str, Any]]) -> Path:
    """The run as lm-evaluation-harness writes one: `fields` gives each test item's input fields by id, `rows`
    are predictions.jsonl's lines. Returns the results file."""
    task = record.task
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime())
    output_type = task_kind(resolved["task"].get("kind") or "classify").lmeval_output_type_for(record.scorer)
    metrics = {exported(name): higher_is_better(name) for name in record.metrics}
    values = {exported(name): value for name, value in record.metrics.items()}
    results = {"alias": task, **{f"{name},none": value for name, value in values.items()}}
    for name, value in record.stderr.items():
        results[f"{exported(name)}_stderr,none"] = value
    payload = {
        "results": {task: results},
        "group_subtasks": {task: []},
        "configs": {task: {
            "task": task, "dataset_path": resolved["task"].get("source"), "test_split": resolved["task"]["eval_split"],
            "fewshot_split": resolved["task"]["demo_split"], "num_fewshot": record.shots, "output_type": output_type,
            "metric_list": [{"metric": name, "aggregation": "mean", "higher_is_better": higher}
                            for name, higher in metrics.items()],
            "repeats": 1,
            "metadata": {"version": 1.0, "harness_template": record.template, "harness_method": record.method,
                         "harness_run_key": record.run_key, "harness_calibration": record.calibration},
        }},
        "versions": {task: 1.0},
        "n-shot": {task: record.shots},
        "higher_is_better": {task: metrics},
        "n-samples": {task: {"original": record.n, "effective": record.n}},
        "config": {"model": "harness", "model_args": {"pretrained": resolved["model"]["path"],
                                                      "name": record.model},
                   "batch_size": resolved.get("batch_size"), "device": record.environment.get("device"),
                   "limit": resolved.get("limit"), "random_seed": record.seed, "fewshot_seed": record.seed},
        # lm-evaluation-harness writes the template's text; the record holds which of the tokenizer's it was
        "chat_template": _chat_template_name(resolved.get("chat_template")),
        "fewshot_as_multiturn": bool(resolved.get("fewshot_as_multiturn")),
        "system_instruction": resolved.get("system_instruction"),
        "system_instruction_sha": _sha256(resolved["system_instruction"]) if resolved.get("system_instruction") else None,
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
        if (known := metric(name)) is not None and known.per_item:  # a right or wrong per item
            chosen = row.get("chosen", {}).get(name, row["prediction"])
            sample[exported(name)] = float(str(chosen) == str(row["gold"]) and chosen is not None)
            sample["metrics"].append(exported(name))
    return sample


def _chat_template_name(setting: Any) -> str | None:
    """chat_template as set: None for plain prompts, "default" for the tokenizer's own, else its name."""
    if setting is None or setting is False:
        return None
    return "default" if setting is True else str(setting)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
