"""What Hydra composes a run from: the RunConfig schema, every task file as an option of the `task` group, and every
registered learning method's defaults as an option of the `method` group (the model group is harness/conf/model)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.finetune.method import all_methods
from harness.inputs.registry import read_task_file, task_files


def register_configs() -> None:
    """Task files go in as plain mappings: Hydra checks the chosen one against RunConfig.task when it composes,
    so start-up does not validate every task. A file that does not even read as YAML is left out here (the
    CLI names its problem when a run chooses it, and `list` marks it broken), so it fails only its own runs."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    for name, path in task_files().items():
        try:
            store.store(group="task", name=name, node=read_task_file(path))
        except HarnessError:
            continue
    for name, method in all_methods().items():
        store.store(group="method", name=name, node={"name": name, **method.defaults})
