"""Where tasks, templates and named models are found, and their registration with Hydra.

Built-in tasks live in tasks/*.yaml with templates in prompts/<task>/*.yaml at the repository
root. HARNESS_PATH (directories separated by os.pathsep) adds more roots laid out the same
way, so a user adds a task by adding files.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config import HubSourceConfig, RunConfig, SourceConfig, TaskConfig
from harness.errors import HarnessError

PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_ROOT = PACKAGE_DIR.parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "conf" / "model"


def search_roots() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get("HARNESS_PATH", "").split(os.pathsep) if p]
    return extra + [BUILTIN_ROOT]


def task_files() -> dict[str, Path]:
    """Task name -> YAML file; earlier roots shadow later ones."""
    found: dict[str, Path] = {}
    for root in reversed(search_roots()):
        for path in sorted((root / "tasks").glob("*.yaml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def template_files(task: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in reversed(search_roots()):
        for path in sorted((root / "prompts" / task).glob("*.yaml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def model_names() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml") if p.stem != "hf")


def read_task_file(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise HarnessError(f"cannot read task file {path}: {error}") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"task file {path} must hold a mapping")
    return raw


def load_task_node(path: Path) -> OmegaConf:
    """A task file merged onto the TaskConfig schema: unknown keys and wrong types fail here."""
    raw = read_task_file(path)
    try:
        node = OmegaConf.structured(TaskConfig)
        for key, schema in (("files", SourceConfig), ("hub", HubSourceConfig)):
            if raw.get(key) is not None:  # Optional dataclass fields start as None: give them their schema
                node[key] = OmegaConf.structured(schema)
        return OmegaConf.merge(node, raw)
    except OmegaConfBaseException as error:
        raise HarnessError(f"task file {path}: {str(error).splitlines()[0]}") from None


def register_configs() -> None:
    """Task files go in as plain mappings: Hydra checks the chosen one against RunConfig.task when it composes,
    so a broken task file fails only the runs that choose it, and start-up does not validate every task."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    for name, path in task_files().items():
        store.store(group="task", name=name, node=read_task_file(path))
