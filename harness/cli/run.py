"""The `run` and `list` commands on top of Hydra."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.cli.configs import register_configs
from harness.config import RunConfig
from harness.engine.backend import BACKENDS
from harness.errors import HarnessError, RunInterrupted
from harness.finetune.method import all_methods
from harness.inputs.registry import (
    MODEL_CONFIG_DIR,
    group_files,
    load_group,
    load_task_node,
    model_names,
    task_files,
    task_problem,
    template_files,
)
from harness.kinds.base import Answers, all_kinds, task_kind
from harness.kinds.calibration import calibrated
from harness.metrics.registry import UNCALIBRATED, diagnostic
from harness.runs.distributed import is_main_process
from harness.runs.launch import relaunch, requested_processes
from harness.runs.records import RunRecord

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--info", "-i", "--package", "-p", "--config-path", "-cp", "--config-name",
                          "-cn", "--config-dir", "-cd", "--experimental-rerun"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)
HYDRA_FLAGS_WITHOUT_RUN = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--version"}


def run_command(arguments: list[str]) -> int:
    processes, arguments = requested_processes(arguments)
    if processes is not None and processes > 1:  # the same command, split across processes by accelerate
        return relaunch(processes, arguments)
    register_configs()
    arguments = _quote_non_ascii(_expand_groups(_expand_model_override(arguments)))
    if not HYDRA_FLAGS_WITHOUT_RUN & set(arguments):
        overrides = [arg for arg in arguments if not arg.startswith("-")]
        _check_tasks(overrides)
        _check_overrides(overrides, multirun=bool(MULTIRUN_FLAGS & set(arguments)))
    sys.argv = [sys.argv[0], *_flags_first(arguments)]
    _hydra_app()
    return 0


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_app(config: DictConfig) -> None:
    from harness.runs.plan import templates_to_run
    from harness.runs.run import run

    _share_cores_between_parallel_jobs()
    try:
        run_config: RunConfig = OmegaConf.to_object(config)
        results = [run(replace(run_config, template=name)) for name in templates_to_run(run_config)]
    except RunInterrupted as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(INTERRUPTED)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OmegaConfBaseException as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    if not is_main_process():
        return  # a data-parallel run's other processes: the main one prints the same records
    records = [result.record for result in results]
    print(_results_table(records))
    if len(results) > 1:
        print(_template_spread(records))
    for result in results:
        reused = " (complete already: not run again; rerun=true forces it)" if result.reused else ""
        print(f"run record: {result.run_dir}{reused}")


def _share_cores_between_parallel_jobs() -> None:
    """Runs the joblib launcher starts side by side get cores // n_jobs threads each (torch's pool and OpenMP):
    two runs that each take every core spin against each other (OpenMP threads busy-wait)."""
    try:
        launcher = HydraConfig.get().launcher
    except ValueError:  # not a Hydra job (tests calling run directly)
        return
    if "joblib" not in str(launcher.get("_target_", "")):
        return  # one job at a time in this process (basic launcher), or one per node (submitit)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    n_jobs = max(1, cores + 1 + n_jobs if n_jobs < 0 else n_jobs)  # joblib: -1 means every core, -2 all but one
    threads = max(1, cores // n_jobs)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for libraries that start their pools later
    import torch  # the run imports it anyway

    torch.set_num_threads(threads)


def _flags_first(arguments: list[str]) -> list[str]:
    """Hydra's parser takes flags only before the overrides; users write `run task=x -m shots=0,4`."""
    flags, overrides = [], []
    taking_value = False
    for arg in arguments:
        if arg.startswith("-"):
            flags.append(arg)
            taking_value = arg in HYDRA_FLAGS_WITH_VALUE
        elif taking_value and "=" not in arg:
            flags.append(arg)
            taking_value = False
        else:
            overrides.append(arg)
            taking_value = False
    return flags + overrides


def _expand_model_override(arguments: list[str]) -> list[str]:
    """`model=<hub id, directory or .gguf file>` that names no model config means the generic `hf` config. The
    path goes to Hydra quoted, so that any path is taken as it is (Hydra's grammar reads `(`, `<`, `=`, `,` and
    spaces in a bare value as syntax). A value with commas is a sweep over models unless it is quoted or names an
    existing path."""
    expanded = []
    for argument in arguments:
        key, _, value = argument.partition("=")
        path = _unquoted(value)
        is_path = path != value or "," not in value or Path(value).expanduser().exists()  # else: a sweep of models
        if key == "model" and path and is_path and path not in model_names():
            name = Path(path).stem if path.lower().endswith(".gguf") else Path(path).name or path
            expanded += ["model=hf", f"model.path={hydra_quoted(path)}", f"model.name={hydra_quoted(name)}"]
        else:
            expanded.append(argument)
    return expanded


def hydra_quoted(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar, read back exactly: a quote is escaped, and so are
    the backslashes before a quote or at the end (elsewhere Hydra keeps them as they are); `${` would be an
    interpolation, so it is escaped too."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, value).replace("'", "\\'")
    return "'" + escaped.replace("${", "\\${") + "'"


def _unquoted(value: str) -> str:
    """A value the user quoted for Hydra (`model='/data/my model (v2)'`), as Hydra reads it; others as they are."""
    if len(value) < 2 or value[0] != value[-1] or value[0] not in "'\"":
        return value
    try:
        return str(OverridesParser.create().parse_override(f"quoted={value}").value())
    except HydraException:
        return value


def _expand_groups(arguments: list[str]) -> list[str]:
    """`task=<group>` stands for the group's tasks, one run each: a multirun over them (-m added)."""
    groups = group_files()
    expanded, grouped = [], False
    for argument in arguments:
        key, _, value = argument.partition("=")
        names = [name.strip() for name in value.split(",")]
        if key == "task" and any(name in groups for name in names):
            tasks = [task for name in names for task in (load_group(name).metrics if name in groups else [name])]
            expanded.append(f"task={','.join(dict.fromkeys(tasks))}")
            grouped = True
        else:
            expanded.append(argument)
    if grouped and not MULTIRUN_FLAGS & set(arguments):
        expanded.insert(0, "-m")
    return expanded


def _quote_non_ascii(arguments: list[str]) -> list[str]:
    """Hydra's override grammar takes non-ASCII text only in quotes: `output_dir=résultats` is quoted for it."""
    quoted = []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if equals and not value.isascii() and not set(value) & set("'\",[]{}()") and not argument.startswith("-"):
            argument = f"{key}='{value}'"
        quoted.append(argument)
    return quoted


def _check_tasks(overrides: list[str]) -> None:
    """A chosen task whose file is broken fails with its own reason (the other tasks work as usual)."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "task":
            for name in value.split(","):
                problem = task_problem(name.strip())
                if problem:
                    raise HarnessError(problem)


def _check_overrides(overrides: list[str], multirun: bool) -> None:
    """Compose every value of every override once, so a bad one fails in one line before any job runs."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException as error:  # OverrideParseException, or the lexer's own
            raise HarnessError(f"cannot read the setting {override!r} ({str(error).splitlines()[0]}): a value with "
                               "characters such as ( ) [ ] { } < > = , or spaces goes in quotes, key='value' "
                               "(in a shell: \"key='value'\"); model= takes any path as it is") from None
    try:
        parsed = parser.parse_overrides(overrides)
        if not multirun:
            sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
            if sweeps:
                key, _, values = sweeps[0].partition("=")
                raise HarnessError(f"{sweeps[0]} gives several values: add -m to run each of them "
                                   f"(python -m harness run -m {sweeps[0]}), or write a list as {key}=[{values}]")
        choices = [
            [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
            else [o.input_line]
            for o in parsed
        ]
        first = [values[0] for values in choices]
        variants = [first] + [first[:i] + [value] + first[i + 1 :] for i, values in enumerate(choices) for value in values[1:]]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            for variant in variants:
                compose(config_name="config", overrides=variant)
    except MissingConfigException as error:
        group, _, name = (error.missing_cfg_file or "config").rpartition("/")
        options = f" (choose from: {', '.join(error.options)})" if error.options else ""
        if group == "hydra/launcher":  # launchers are Hydra plugins, installed with the extras
            options += "; hydra/launcher=joblib needs pip install -e '.[sweep]', slurm and submitit_* need '.[slurm]'"
        raise HarnessError(f"unknown {group or 'config'} '{name}'{options}") from None
    except (HydraException, OmegaConfBaseException) as error:
        # Hydra says what it tried ("Could not override 'foo'."); its cause says why ("Key 'foo' not in ...").
        lines = str(error).splitlines()
        what = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]  # "...composing config:"
        what = what.rstrip(".")
        why = str(error.__cause__).splitlines()[0] if error.__cause__ else ""
        raise HarnessError(f"{what}: {why}" if why else what) from None


def _results_table(records: list[RunRecord]) -> str:
    metrics = list(dict.fromkeys(name for record in records for name in record.metrics
                                 if not diagnostic(name)))  # the tasks' own, in their order (not ECE)
    columns = ["task", "model", "method", "template", "shots", "seed", "n", *metrics]
    if any(calibrated(record.calibration) for record in records):
        columns += ["calibration", f"{UNCALIBRATED}{metrics[0]}"]
    columns += ["wall_time_s"]
    rows = [[_format(_value(record, column)) for column in columns] for record in records]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(value.ljust(width) for value, width in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _value(record: RunRecord, column: str) -> object:
    if column.startswith(UNCALIBRATED):
        return (record.uncalibrated or {}).get(column.removeprefix(UNCALIBRATED))
    if column == "wall_time_s":
        return record.cost.wall_time_s
    if column in record.metrics:
        return record.metrics[column]
    return getattr(record, column, None)


def _template_spread(records: list[RunRecord]) -> str:
    """template=all: how much the choice of template moves the task's first metric (mean, std over templates,
    range)."""
    metric = next(iter(records[0].metrics))
    values = [record.metrics[metric] for record in records]
    mean = sum(values) / len(values)
    std = (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5
    return (f"across {len(values)} templates: {metric} {mean:.4f} ± {std:.4f} (std over templates), "
            f"min {min(values):.4f}, max {max(values):.4f}")


def _format(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) and not isinstance(value, bool) else str(value)


def list_command() -> int:
    print("tasks (task=NAME; templates with template=NAME, * = default):")
    for name, path in task_files().items():
        try:
            task = load_task_node(path)
        except HarnessError as error:
            print(f"  {name:<12} BROKEN: {error}")
            continue
        source = ("files" if task.data_dir else "packaged" if task.packaged else "hub" if task.hub
                  else "corpus" if task.corpus else "?")
        kind = f"{len(task.labels)} labels" if task_kind(task.kind).answers == Answers.label else str(task.kind)
        templates = [f"{t}*" if t == task.default_template else t for t in template_files(name)]
        print(f"  {name:<14} {kind}, {', '.join(task.metrics)}; {source}: {', '.join(templates) or '(no templates)'}")
    print("task groups (task=NAME runs each of its tasks; the report averages the metric named):")
    for name in group_files():
        try:
            group = load_group(name)
        except HarnessError as error:
            print(f"  {name:<14} BROKEN: {error}")
            continue
        print(f"  {name:<14} {', '.join(f'{task} ({metric})' for task, metric in group.metrics.items())}")
    print("models (model=NAME, or model=<hub id or local path>):")
    for name in model_names():
        path = OmegaConf.load(MODEL_CONFIG_DIR / f"{name}.yaml").path
        print(f"  {name:<12} {path}")
    print("methods (method=NAME):")
    for name, method in all_methods().items():
        print(f"  {name:<14} {method.description}")
    print("task kinds (kind: in a task file):")
    for name, kind in all_kinds().items():
        metrics = f"metrics: {', '.join(kind.metrics)}" if kind.metrics else "metrics as the task names them"
        print(f"  {name:<14} {kind.title} ({kind.answers.value} per item); {metrics}")
    print("backends (model.backend=NAME):")
    for name, spec in BACKENDS.items():
        print(f"  {name:<14} {'trainable' if spec.trainable else 'inference only'}")
    return 0
