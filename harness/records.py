"""Run records: one directory per run, written atomically.

A run directory holds config.yaml (the resolved config), predictions.jsonl and
metrics.json. metrics.json is written last, so its presence marks a complete run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

# Settings that cannot change a run's numbers: they do not enter the config hash.
HASH_EXCLUDED = ("output_dir", "batch_size", "prefix_cache", "rerun")
VERSIONED_PACKAGES = ("harness", "torch", "transformers", "datasets", "evaluate", "hydra-core", "numpy")


def config_hash(config: dict[str, Any]) -> str:
    relevant = {key: value for key, value in config.items() if key not in HASH_EXCLUDED}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_dir_name(config: dict[str, Any]) -> str:
    model = config["model"]["name"].replace("/", "--")
    return (
        f"{config['task']['name']}__{model}__{config['method']['name']}"
        f"__{config['shots']}shot__seed{config['seed']}__{config_hash(config)}"
    )


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def environment() -> dict[str, Any]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "git_commit": _git_commit()}


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
