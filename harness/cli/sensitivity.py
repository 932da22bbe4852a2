"""`python -m harness sensitivity`: a designed experiment over the sources of variation of ICL and fine-tuning.

The command turns the sources a user names into one Hydra multirun per method (so the joblib and SLURM
launchers apply, and every run is an ordinary, content-hashed run record), plans every run first
without the model (how many, how many already recorded, how long the rest should take), runs what is
missing, writes the study record (harness/runs/study.py) and prints the variance decomposition
(harness/report/studies.py). Running the same command again runs nothing.
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.cli.configs import register_configs
from harness.cli.run import CONFIG_DIR, run_command
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.finetune.method import all_methods, learning_method
from harness.inputs.prompts import load_template
from harness.kinds.calibration import calibrated
from harness.runs.plan import plan_run, templates_to_run
from harness.runs.run import reusable
from harness.runs.study import Cell, Condition, FactorSpec, Source, Study, write_study

USAGE = """usage: python -m harness sensitivity [study options] [run settings] [--dry-run]

Runs (or reuses) every combination of the sources named, one Hydra multirun per method, then prints how
much of the variance of accuracy comes from each source; `python -m harness report` shows it too.

study options:
  vary=SOURCE,...     what varies (default: set,order for icl, set,train_seed for fine-tuning):
                        set          which k examples are drawn (seeds 1..sets), demonstrations or training set
                        order        their order in the prompt, within each set (icl)
                        template     every template of the task
                        label_words  the template's alternative label words (its label_words), and its own
                        calibration  contextual calibration on and off (read from the same runs: no extra runs)
                        train_seed   the fine-tuning seed, with the training set held fixed
                        chat_template  plain prompts and the model's chat template (demonstrations as turns)
  sets=N              demonstration (training) sets, default 5
  orders=all|N        orders per set: all k! permutations (the default up to k = 4), else N drawn (default 24)
  train_seeds=N       fine-tuning seeds per training set, default 3
  methods=M,...       icl and/or fine-tuning methods (lora, bitfit, ia3, prompt_tuning, full); default icl
  name=NAME           the study's name (default from task, k, methods and sources)
  --dry-run           plan and estimate, run nothing
run settings: anything `python -m harness run` takes, e.g. task=sst2 shots=4 model=smollm2-135m
  task.data_dir=../shared/data/sst2 subsample=256 output_dir=results hydra/launcher=joblib
"""
STUDY_KEYS = ("vary", "sets", "orders", "train_seeds", "methods", "name")
DEFAULT_ORDER_SAMPLE = 24  # beyond k = 4 (24 permutations), as many drawn orders as k = 4 has in all
ORDER_SAMPLE_SEED = 0
SWEPT = {Source.set: "seed", Source.order: "demo_order", Source.template: "template",
         Source.label_words: "label_words", Source.train_seed: "train_seed", Source.chat_template: "chat_template"}


@dataclass
class StudyOptions:
    vary: list[Source] | None = None
    sets: int = 5
    orders: int | None = None  # None: all permutations up to k = 4, else DEFAULT_ORDER_SAMPLE
    train_seeds: int = 3
    methods: list[str] = field(default_factory=lambda: ["icl"])
    name: str | None = None
    dry_run: bool = False
    overrides: list[str] = field(default_factory=list)  # for `run`


@dataclass(frozen=True)
class PlannedCell:
    levels: list[int]  # the level index of each factor
    run_dir: Path
    complete: bool


def sensitivity_command(arguments: list[str]) -> int:
    if {"-h", "--help"} & set(arguments):
        print(USAGE, end="")
        return 0
    started = time.perf_counter()
    options = parse_arguments(arguments)
    register_configs()
    base = _compose(options.overrides)
    factors = {method: design(method, base, options) for method in options.methods}
    calibration = Source.calibration in (options.vary or [])
    cells = {method: plan_cells(method, factors[method], options.overrides, calibration) for method in options.methods}
    name = options.name or _default_name(base, options)
    print(_plan_text(name, base, factors, cells, calibration, Path(base.output_dir)))
    if options.dry_run:
        return 0
    for method in options.methods:
        if all(cell.complete for cell in cells[method]):
            continue
        sweeps = [f"{SWEPT[Source(spec.name)]}={','.join(spec.levels)}" for spec in factors[method]]
        run_command(["-m", *options.overrides, f"method={method}", *sweeps,
                     *(["calibration=contextual"] if calibration else [])])
    missing = [cell.run_dir for method in options.methods for cell in cells[method]
               if reusable(cell.run_dir, quiet=True) is None]
    if missing:
        raise HarnessError(f"{len(missing)} runs of the study did not finish (first: {missing[0]}); rerun the same "
                           "command to run them")
    study = Study(name=name, task=base.task.name, model=base.model.name, shots=base.shots,
                  command="python -m harness sensitivity " + shlex.join(arguments),
                  conditions=[condition for method in options.methods
                              for condition in _conditions(method, factors[method], cells[method], calibration,
                                                           str(base.calibration))])
    path = write_study(Path(base.output_dir), study)
    from harness.report.studies import analyse, summary_text  # pandas, no torch: after the runs

    print(summary_text(analyse(study)))
    ran = sum(1 for method in options.methods for cell in cells[method] if not cell.complete)
    print(f"study record: {path} ({ran} run{'s' * (ran != 1)} made, {sum(map(len, cells.values())) - ran} reused, "
          f"{_duration(time.perf_counter() - started)} in all; python -m harness report {base.output_dir} shows it "
          "with its plots)")
    return 0


def parse_arguments(arguments: list[str]) -> StudyOptions:
    options = StudyOptions()
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if argument == "--dry-run":
            options.dry_run = True
        elif argument.startswith("-"):
            raise HarnessError(f"unknown flag '{argument}' for sensitivity (--dry-run; the study is a multirun "
                               "already, so no -m)")
        elif not equals:
            raise HarnessError(f"'{argument}' is not key=value (python -m harness sensitivity --help)")
        elif key in STUDY_KEYS:
            _set_option(options, key, value)
        else:
            options.overrides.append(argument)
    varied = options.vary or [Source.set, Source.order, Source.train_seed]  # what design() varies by default
    set_by_study = {SWEPT[source] for source in varied if source in SWEPT} | {"method"}
    if Source.calibration in varied:
        set_by_study.add("calibration")
    for override in options.overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key in set_by_study:
            raise HarnessError(f"{key} is set by the study (vary=, methods=): leave '{override}' out")
        value = override.partition("=")[2]
        if "," in value and not value.startswith(("[", "{", "'", '"')) and not override.startswith("hydra"):
            raise HarnessError(f"'{override}' gives several values: a study's sources are named with vary=")
    return options


def _set_option(options: StudyOptions, key: str, value: str) -> None:
    parts = [part.strip() for part in value.split(",") if part.strip()]
    try:
        if key in ("vary", "methods") and not parts:  # `vary=`: an empty list would silently mean the defaults
            raise HarnessError(f"{key}= names no value; leave it out for the default, or name one or more of: "
                               f"{', '.join([source.value for source in Source] if key == 'vary' else all_methods())}")
        if key == "vary":
            options.vary = [Source(part) for part in parts]
        elif key == "methods":
            unknown = [part for part in parts if part not in all_methods()]
            if unknown:
                raise ValueError
            options.methods = list(dict.fromkeys(parts))
        elif key == "name":
            if not value or "/" in value or value.startswith("."):
                raise ValueError
            options.name = value
        elif key == "orders":
            options.orders = None if value == "all" else int(value)
            if options.orders is not None and options.orders < 1:
                raise ValueError
        else:
            setattr(options, key, int(value))
            if getattr(options, key) < 1:
                raise ValueError
    except ValueError:
        choices = {"vary": ", ".join(s.value for s in Source), "methods": ", ".join(all_methods()),
                   "orders": "all or a positive number", "name": "a file name"}.get(key, "a positive number")
        raise HarnessError(f"bad {key}={value} (choose from: {choices})") from None


def _compose(overrides: list[str]) -> RunConfig:
    """The run config the study's settings give (every run of the study starts from it)."""
    from harness.cli.run import _check_overrides, _check_tasks

    settings = _run_settings(overrides)
    _check_tasks(settings)
    _check_overrides(settings, multirun=False)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config: RunConfig = OmegaConf.to_object(compose(config_name="config", overrides=settings))
    return config


def _run_settings(overrides: list[str]) -> list[str]:
    """The overrides that make up a run's config (the launcher's hydra/... ones only reach the multirun)."""
    from harness.cli.run import _expand_model_override

    return [o for o in _expand_model_override(overrides) if not o.startswith("hydra")]


def design(method: str, base: RunConfig, options: StudyOptions) -> list[FactorSpec]:
    """The factors a method varies, with their levels as command-line values."""
    finetuning = learning_method(method).trains
    vary = options.vary or ([Source.set, Source.train_seed] if finetuning else [Source.set, Source.order])
    if Source.template in vary and Source.label_words in vary:
        raise HarnessError("vary=template,label_words: label words belong to one template (each has its own); "
                           "study them for one template (template=NAME vary=label_words)")
    factors: list[FactorSpec] = []
    if Source.set in vary:
        factors.append(FactorSpec("set", [str(seed) for seed in range(1, options.sets + 1)]))
    if Source.order in vary and not finetuning:
        if base.shots < 2:
            raise HarnessError(f"vary=order needs at least 2 shots, got shots={base.shots}")
        factors.append(FactorSpec("order", [_list_text(p) for p in orders(base.shots, options.orders)],
                                  within="set" if Source.set in vary else None))
    if Source.train_seed in vary and finetuning:
        factors.append(FactorSpec("train_seed", [str(seed) for seed in range(1, options.train_seeds + 1)]))
    if Source.template in vary:
        factors.append(FactorSpec("template", templates_to_run(replace(base, template="all"))))
    if Source.label_words in vary:
        template = base.template or base.task.default_template
        alternatives = load_template(base.task, template).label_word_sets
        if not alternatives:
            raise HarnessError(f"vary=label_words: template '{template}' of task '{base.task.name}' has no "
                               "label_words (alternative verbalizer sets); add them to its YAML or pick one that has")
        factors.append(FactorSpec("label_words", ["null", *alternatives]))
    if Source.chat_template in vary:
        chat_only = [key for key in ("system_instruction", "gen_prefix", "fewshot_as_multiturn")
                     if getattr(base, key) is not None]
        if chat_only:
            raise HarnessError(f"vary=chat_template compares plain prompts with the chat template; {chat_only[0]} has "
                               "no plain form: leave it out of the study")
        factors.append(FactorSpec("chat_template", ["false", "true"]))
    if not factors:
        raise HarnessError(f"nothing in vary={','.join(map(str, vary))} varies for method={method}")
    return factors


def orders(k: int, count: int | None) -> list[tuple[int, ...]]:
    """All k! permutations of positions when they are few enough (or count >= k!), else `count` distinct ones
    drawn with a fixed seed (the same for every set and every study)."""
    wanted = count if count is not None else (math.factorial(k) if k <= 4 else DEFAULT_ORDER_SAMPLE)
    if wanted >= math.factorial(k):
        return list(itertools.permutations(range(k)))
    rng = np.random.default_rng(ORDER_SAMPLE_SEED)
    drawn: dict[tuple[int, ...], None] = {}
    while len(drawn) < wanted:
        drawn[tuple(int(i) for i in rng.permutation(k))] = None
    return list(drawn)


def plan_cells(method: str, factors: list[FactorSpec], overrides: list[str], calibration: bool) -> list[PlannedCell]:
    """Every configuration of the method's design, planned as `run` would (no model): its run directory and
    whether its record is complete already."""
    settings = _run_settings(overrides)
    cells = []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for levels in itertools.product(*(range(len(spec.levels)) for spec in factors)):
            own = [f"{SWEPT[Source(spec.name)]}={spec.levels[i]}" for spec, i in zip(factors, levels)]
            job = [*settings, f"method={method}", *own, *(["calibration=contextual"] if calibration else [])]
            plan = plan_run(OmegaConf.to_object(compose(config_name="config", overrides=job)))
            cells.append(PlannedCell(list(levels), plan.run_dir, reusable(plan.run_dir, quiet=True) is not None))
    return cells


def _conditions(method: str, factors: list[FactorSpec], cells: list[PlannedCell], calibration: bool,
                fixed_calibration: str) -> list[Condition]:
    """The decompositions a method's runs give: one (each run's own predictions), or with calibration varied two
    from the same runs (the scores before and after contextual calibration)."""
    if calibration:
        variants = [(str(method), False), (f"{method}, contextual calibration", True)]
    else:
        variants = [(str(method) if not calibrated(fixed_calibration) else f"{method}, {fixed_calibration} calibration",
                     True)]
    return [Condition(name=name, method=str(method), factors=factors,
                      cells=[Cell(levels=cell.levels, run_dir=str(cell.run_dir), calibrated=calibrated)
                             for cell in cells])
            for name, calibrated in variants]


def _plan_text(name: str, base: RunConfig, factors: dict[str, list[FactorSpec]],
               cells: dict[str, list[PlannedCell]], calibration: bool, output_dir: Path) -> str:
    lines = [f"study {name}: task {base.task.name}, model {base.model.name}, {base.shots} shots"]
    total_pending, seconds, unknown = 0, 0.0, []
    for method, specs in factors.items():
        planned = cells[method]
        pending = sum(1 for cell in planned if not cell.complete)
        total_pending += pending
        shape = " x ".join(f"{len(spec.levels)} {spec.name}{'s' * (len(spec.levels) != 1 and not spec.name.endswith('s'))}"
                           + (f" (within each {spec.within})" if spec.within else "") for spec in specs)
        lines.append(f"  {method}: {len(planned)} runs ({shape}); {len(planned) - pending} recorded already, "
                     f"{pending} to run" + ("; calibrated and uncalibrated from the same runs" if calibration else ""))
        if pending:
            typical = _typical_wall_time(output_dir, base, method)
            if typical is None:
                unknown.append(str(method))
            else:
                seconds += pending * typical[0]
                lines.append(f"    about {_duration(pending * typical[0])} (median {typical[0]:.1f} s per run over "
                             f"{typical[1]} finished {method} runs of this task, model and k in {output_dir})")
    if unknown:
        lines.append(f"  no estimate for {', '.join(unknown)}: no finished run of this task, model and k in "
                     f"{output_dir} yet")
    lines.append(f"  planned: {sum(map(len, cells.values()))} runs, {total_pending} to run"
                 + (f", estimated {_duration(seconds)}" + (" plus the unestimated" if unknown else "")
                    if seconds else ""))
    return "\n".join(lines)


def _typical_wall_time(output_dir: Path, base: RunConfig, method: str) -> tuple[float, int] | None:
    """Median wall time of the finished runs of this task, model, method and k in the output directory."""
    prefix = f"{base.task.name}__{base.model.name.replace('/', '--')}__{method}__{base.shots}shot__"
    times = []
    for path in output_dir.glob(f"{prefix}*/metrics.json") if output_dir.is_dir() else []:
        try:
            times.append(float(json.loads(path.read_text(encoding="utf-8"))["cost"]["wall_time_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return (statistics.median(times), len(times)) if times else None


def _list_text(permutation: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, permutation)) + "]"


def _default_name(base: RunConfig, options: StudyOptions) -> str:
    vary = options.vary or [Source.set, Source.order, Source.train_seed]
    return (f"{base.task.name}__{base.model.name.replace('/', '--')}__{base.shots}shot__"
            f"{'-'.join(map(str, options.methods))}__{'-'.join(map(str, vary))}")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"

