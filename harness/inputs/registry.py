"""Where tasks, templates, groups and named models are found.

The built-in tasks are the repository's tasks/*.yaml, with templates in prompts/<task>/*.yaml and
groups in groups/*.yaml (the wheel carries the three folders inside the package, see BUILTIN_ROOT).
HARNESS_PATH (directories separated by os.pathsep) adds more roots laid out the same way, so a
user adds a task by adding files; a task in an earlier root shadows one of the same name later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config import HubSourceConfig, PackagedSourceConfig, SourceConfig, TaskConfig
from harness.errors import HarnessError
from harness.inputs.safeyaml import read_yaml_file

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The built-in plugins are the repository's top-level tasks/, prompts/ and groups/; a wheel carries them inside the
# package, in plugins/ (pyproject.toml's force-include), so an installed harness finds them from any directory.
INSTALLED_PLUGINS = PACKAGE_DIR / "plugins"
BUILTIN_ROOT = INSTALLED_PLUGINS if INSTALLED_PLUGINS.is_dir() else PACKAGE_DIR.parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "conf" / "model"


def search_roots() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get("HARNESS_PATH", "").split(os.pathsep) if p]
    return extra + [BUILTIN_ROOT]


def _yaml_files(folder: str) -> dict[str, Path]:
    """Name -> YAML file in `folder` under each root; earlier roots shadow later ones."""
    found: dict[str, Path] = {}
    for root in reversed(search_roots()):
        for path in sorted((root / folder).glob("*.yaml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def task_files() -> dict[str, Path]:
    return _yaml_files("tasks")


def template_files(task: str) -> dict[str, Path]:
    return _yaml_files(f"prompts/{task}")


@dataclass(frozen=True)
class TaskGroup:
    """Several tasks run as one (groups/<name>.yaml): `task=<name>` runs each, the report averages them."""

    name: str
    description: str
    metrics: dict[str, str]  # task -> the metric the group averages for it (its main metric on leaderboards)


def group_files() -> dict[str, Path]:
    return _yaml_files("groups")


def load_group(name: str) -> TaskGroup:
    """A group file, checked: it names known tasks, and for each a metric the task records."""
    path = group_files()[name]
    raw = read_task_file(path, "group file")
    tasks = raw.get("tasks")
    if set(raw) - {"description", "tasks"} or not isinstance(tasks, dict) or not tasks:
        raise HarnessError(f"group file {path} must hold `tasks` (task name -> the metric averaged) and optionally "
                           "`description`")
    known = task_files()
    if name in known:
        raise HarnessError(f"group '{name}' has the name of a task ({known[name]}): rename one of them")
    for task, metric in tasks.items():
        if task not in known:
            raise HarnessError(f"group '{name}' names task '{task}', which does not exist")
        metrics = OmegaConf.to_container(load_task_node(known[task]).metrics)
        if metric not in metrics:
            raise HarnessError(f"group '{name}' averages {metric} of task '{task}', which records {', '.join(metrics)}")
    return TaskGroup(name=name, description=str(raw.get("description", "")),
                     metrics={str(task): str(metric) for task, metric in tasks.items()})


def model_names() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml") if p.stem != "hf")


def read_task_file(path: Path, what: str = "task file") -> dict:
    """A task or group file's mapping, read with bounds (harness/inputs/safeyaml.py): a hostile file fails in one line."""
    raw = read_yaml_file(path, what)
    if not isinstance(raw, dict):
        raise HarnessError(f"{what} {path} must hold a mapping")
    return raw


def load_task_node(path: Path) -> OmegaConf:
    """A task file merged onto the TaskConfig schema: unknown keys and wrong types fail here."""
    raw = read_task_file(path)
    if "name" in raw and str(raw["name"]) != path.stem:  # task=NAME finds the file; templates go by the name
        raise HarnessError(f"task file {path} says name: {raw['name']}; a task's name must be its file's name "
                           f"({path.stem}): rename one of them")
    try:
        node = OmegaConf.structured(TaskConfig)
        for key, schema in (("files", SourceConfig), ("hub", HubSourceConfig), ("packaged", PackagedSourceConfig)):
            if raw.get(key) is not None:  # Optional dataclass fields start as None: give them their schema
                node[key] = OmegaConf.structured(schema)
        return OmegaConf.merge(node, raw)
    except OmegaConfBaseException as error:
        raise HarnessError(f"task file {path}: {str(error).splitlines()[0]}") from None


def task_problem(name: str) -> str | None:
    """Why task `name` cannot be used (its file does not read or does not fit the schema), or None."""
    path = task_files().get(name)
    if path is None:
        return None
    try:
        load_task_node(path)
    except HarnessError as error:
        return str(error)
    return None
