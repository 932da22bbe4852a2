"""Run records: one directory per run, written atomically; the record is a dataclass that run writes
and report reads.

A run directory holds config.yaml (the resolved config, written when the run starts),
journal.jsonl while it is scoring (harness/engine/journal.py), the fine-tuning checkpoint for fine-tuning
methods, then predictions.jsonl and metrics.json. metrics.json is written last, so its presence marks
a complete run. Its name ends in the run key: a hash of the config and of the content of every input
(task file, template file, data, model weights), so a changed input is a new run, never the old
numbers under a new name.

Files are created with the permissions the umask allows (0644 under the usual 022), so colleagues
can read a shared results directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.files import sha256_text
from harness.finetune.method import TrainingRecord
from harness.kinds.base import task_kind

RECORD_FORMAT = 2
CONFIG_FILE = "config.yaml"  # the resolved config, written when the run starts
PREDICTIONS_FILE = "predictions.jsonl"
RECORD_FILE = "metrics.json"  # written last: its presence marks a complete run
# a run directory's name ends in its run key (run_dir_name)
RUN_DIR_NAME = re.compile(r"__-?\d+shot__seed-?\d+__(?P<key>[0-9a-f]{10})$")
# Settings that cannot change a run's numbers: they do not enter the run key.
HASH_EXCLUDED = ("output_dir", "batch_size", "batch_tokens", "prefix_cache", "rerun", "lmeval_results")
# The model's own settings that are only a note, or say where its layers sit (the same numbers: tested)
MODEL_HASH_EXCLUDED = ("licence", "device_map", "max_memory", "offload_folder", "base_url", "api_key_env",
                       "concurrency", "timeout_s", "max_retries", "vllm_python", "gpu_memory_utilization",
                       "tensor_parallel_size", "enable_prefix_caching", "enforce_eager")
# Settings added after records existed (dotted paths into the config): at this value, what every earlier run
# did, they stay out of the key, so adding them did not orphan a single record (tests/test_cli.py pins old keys).
KEY_NEUTRAL = {"train_seed": None, "label_words": None, "task.units_field": None, "task.answer.filters": {},
               "model.backend": "hf", "model.api_model": None, "model.tokenizer": None, "chat_template": False,
               "fewshot_as_multiturn": None, "system_instruction": None, "gen_prefix": None}
# recorded name -> distribution (the harness's own is icl-harness on PyPI; records call it harness)
VERSIONED_PACKAGES = {"harness": "icl-harness", **{name: name for name in ("torch", "transformers", "datasets", "evaluate",
                                                                          "hydra-core", "numpy")}}




class RecordError(ValueError):
    """A file in a run directory that is not a valid run record: what is wrong, in one line."""


@dataclass(frozen=True)
class Inputs:
    """Content hashes of what the run read besides its config (harness/runs/fingerprint.py)."""

    task_file: str | None  # sha256 of the task's YAML file (None: a task given entirely on the command line)
    template_file: str  # sha256 of the template's YAML file
    eval_data: str  # sha256 of the evaluation split's examples (id, fields, label), before subsample/limit
    demo_data: str | None  # the same for the demonstration split; None at 0 shots
    model: str  # the weights: a packaged wheel's sha256, a local directory's file hashes, or a hub commit


@dataclass(frozen=True)
class Cost:
    wall_time_s: float  # this process, from planning to the record
    scoring_time_s: float
    tokens_scored: int  # context + continuation tokens of every (example, label) pair
    tokens_forwarded: int  # tokens the model ran: shared prefixes and queries once
    tokens_scored_per_s: float | None
    inference_tokens_per_example: float  # one pass over the context plus every label's tokens
    examples_resumed: int  # scored by an earlier, interrupted process of this run (from its journal)
    # the most memory in use while the model loaded, trained and scored (MiB): CUDA's peak allocation, else the
    # process's resident set; None in records written before it was measured
    peak_memory_mb: float | None = None


# Measured per process, so they differ between an interrupted-and-resumed run and an uninterrupted one.
PROCESS_MEASUREMENTS = ("wall_time_s", "scoring_time_s", "tokens_scored_per_s", "examples_resumed",
                        "train_time_s", "peak_memory_mb")


@dataclass(frozen=True)
class RunRecord:
    """metrics.json: what ran, what it read, what it scored, and what it cost."""

    task: str
    model: str
    method: str
    template: str
    shots: int
    seed: int
    scorer: str
    calibration: str
    demos: str
    run_key: str
    inputs: Inputs
    n: int  # test items scored
    metrics: dict[str, float]  # the task's metrics, ece, and no_label_rate for the generate scorer
    stderr: dict[str, float]  # standard error of each metric over the test items (harness/metrics/functions.py)
    by: dict[str, dict[str, float]] | None  # task.metrics_by: the metrics of each value (MMLU: per subject)
    uncalibrated: dict[str, float] | None  # a calibrated run's metrics before calibration (same scores)
    demo_ids: list[str] | None  # the run's one demonstration set; None when each example has its own
    train_ids: list[str]
    examples_with_dropped_demos: int
    predictions_sha256: str  # of predictions.jsonl, so a damaged or cut file is found
    cost: Cost
    training: TrainingRecord | None
    calibration_scores: list[dict[str, Any]] | None  # per demonstration set: its content-free / premise scores
    environment: dict[str, Any]
    format: int = RECORD_FORMAT

    def to_json(self) -> str:
        try:
            return json.dumps(asdict(self), indent=2, allow_nan=False) + "\n"
        except ValueError:  # NaN or infinity: a broken run must fail, never leave invalid JSON behind
            raise RecordError(f"run {self.run_key} has non-finite values; not writing its record") from None

    def reproducible_part(self) -> dict[str, Any]:
        """The record less what is measured per process (PROCESS_MEASUREMENTS): the same for a run that was
        interrupted and resumed as for one that was not."""
        payload = asdict(self)
        for section in (payload, payload["cost"], payload["training"] or {}):
            for key in PROCESS_MEASUREMENTS:
                section.pop(key, None)
        return payload

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise RecordError(f"not valid JSON ({error})") from None
        if not isinstance(raw, dict):
            raise RecordError("not a JSON object")
        if raw.get("format") != RECORD_FORMAT:
            raise RecordError(f"record format {raw.get('format', 1)}, this harness reads {RECORD_FORMAT} "
                              "(written by another version of the harness: run it again)")
        missing = [f.name for f in fields(cls) if f.name not in raw and f.name != "format"]
        if missing:
            raise RecordError(f"not a run record (no {', '.join(missing)})")
        try:
            record = cls(**{**raw, "inputs": Inputs(**raw["inputs"]), "cost": Cost(**raw["cost"]),
                            "training": TrainingRecord(**raw["training"]) if raw["training"] else None})
        except TypeError as error:
            raise RecordError(f"unexpected layout ({error})") from None
        bad = [name for name, value in record.metrics.items() if not isinstance(value, (int, float))
               or not math.isfinite(value)]
        if bad:
            raise RecordError(f"metric {bad[0]} is {record.metrics[bad[0]]!r}, not a finite number")
        return record


def read_run(run_dir: Path) -> RunRecord:
    """The run's record, checked as every reader of a record must check it before using it (reporting, reusing,
    exporting): metrics.json is a valid record of this run directory with finite metrics, and predictions.jsonl is
    the very file the run wrote (its sha256 is in the record), so a damaged, cut or hand-edited file is never
    taken for a result. RecordError says what is wrong, in one line."""
    try:
        record = RunRecord.from_json((run_dir / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise RecordError(f"{RECORD_FILE} cannot be read ({error})") from None
    except RecordError as error:
        raise RecordError(f"{RECORD_FILE}: {error}") from None
    named = RUN_DIR_NAME.search(run_dir.name)
    if named and named["key"] != record.run_key:
        raise RecordError(f"{RECORD_FILE} is the record of run {record.run_key}, not of this directory's run "
                          f"{named['key']}")
    _check_predictions(run_dir, record)
    return record


def read_predictions(run_dir: Path, record: RunRecord) -> list[dict[str, Any]]:
    """predictions.jsonl's rows, checked against the record (read_run) as they are read."""
    return [json.loads(line) for line in _check_predictions(run_dir, record).splitlines() if line.strip()]


def _check_predictions(run_dir: Path, record: RunRecord) -> str:
    path = run_dir / PREDICTIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecordError(f"{PREDICTIONS_FILE} cannot be read ({error})") from None
    if sha256_text(text) != record.predictions_sha256:
        lines = text.count("\n")
        cut = f" ({lines} lines for {record.n} items: cut short)" if lines != record.n or not text.endswith("\n") else ""
        raise RecordError(f"{PREDICTIONS_FILE} is not the file the run wrote{cut}; its sha256 differs from the "
                          "record's")
    return text


def run_key(config: dict[str, Any], inputs: Inputs) -> str:
    relevant = _without_neutral({key: value for key, value in config.items() if key not in HASH_EXCLUDED})
    relevant["model"] = {key: value for key, value in relevant["model"].items() if key not in MODEL_HASH_EXCLUDED}
    rules = task_kind(config["task"].get("kind") or "classify").answer_rules
    if rules is not None:  # how the kind compares answers (short answers), bumped when that changes
        relevant["answer_rules"] = rules
    payload = json.dumps({"config": relevant, "inputs": asdict(inputs)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def _without_neutral(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config less every KEY_NEUTRAL setting (a dotted path) that holds its neutral value."""
    kept = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if path in KEY_NEUTRAL and value == KEY_NEUTRAL[path]:
            continue
        nested = isinstance(value, dict) and any(neutral.startswith(f"{path}.") for neutral in KEY_NEUTRAL)
        kept[key] = _without_neutral(value, f"{path}.") if nested else value
    return kept


def run_dir_name(config: dict[str, Any], key: str) -> str:
    model = config["model"]["name"].replace("/", "--")
    return (
        f"{config['task']['name']}__{model}__{config['method']['name']}"
        f"__{config['shots']}shot__seed{config['seed']}__{key}"
    )


def environment(device: str, dtype: str, threads: int, processes: int = 1,
                engine_versions: dict[str, str] | None = None,
                chat_templates: list[str] | None = None) -> dict[str, Any]:
    """Where the run ran; threads per process, processes > 1 for a data-parallel run (accelerate launch); the
    versions of what ran the model outside this environment (vLLM in its own); the chat templates the model's
    tokenizer has (the report notes plain runs of a model that has one)."""
    versions: dict[str, str | None] = {}
    for package, distribution in VERSIONED_PACKAGES.items():
        try:
            versions[package] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions.update(engine_versions or {})
    return {"device": device, "dtype": dtype, "threads": threads, "processes": processes,
            "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "git_commit": _git_commit(),
            "chat_templates": chat_templates or []}


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
