"""Task kinds: what a task's items are and how a run scores, predicts and measures them. Each kind is one class in
its own module of harness/kinds/, registered by name (`kind:` in a task file); everything that differs between
kinds is a method or an attribute here, so nothing elsewhere tests a kind's name.

A kind declares what its items bring (the task's labels, options with a gold one, or a text alone), the metrics
it can compute, the settings it rules out and lm-evaluation-harness's name for its output type; it builds the
run's scoring requests from the prompts, turns the backend's scores into predictions and the predictions into
metrics. The lower steps (data, templates) read the declarations through task_kind(); the kind modules
themselves are imported on first use, so the lower steps never import the engine.

Adding a kind: a module beside the others with a registered subclass of TaskKind, and its name in BUILTIN.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.metrics.registry import MACRO, MetricInputs, measure

if TYPE_CHECKING:
    from harness.config import RunConfig, TaskConfig
    from harness.engine.backend import Backend
    from harness.engine.journal import Journal
    from harness.engine.request import ScoringRequest
    from harness.engine.scoring import ScoringStats
    from harness.inputs.data import Example
    from harness.inputs.prompts import Template

# the modules of the built-in kinds, imported (and so registered) on the first lookup
BUILTIN = ("harness.kinds.classification", "harness.kinds.multiple_choice", "harness.kinds.cloze",
           "harness.kinds.short_answer", "harness.kinds.perplexity")


class Answers(Enum):
    """What an item brings besides its input fields."""

    label = "label"  # one of the task's labels (columns: label, mapped by label_values)
    options = "options"  # its own answer options and the index of the right one (columns: choices, gold)
    text = "text"  # nothing: the item is a text to score


OpenJournal = Callable[[Sequence["ScoringRequest"]], "Journal"]


@dataclass(frozen=True)
class Items:
    """What a run scores: its settings, template, the task's labels, the test items and each one's demonstrations
    (this process's block of them), and how to score them."""

    config: RunConfig
    template: Template
    labels: list[str]
    examples: list[Example]
    demonstrations: list[list[Example]]
    backend: Backend
    batch_size: int | None  # requests per batch; None: auto, by a token budget
    batch_tokens: int | None  # auto's token budget (None: the backend's)
    open_journal: OpenJournal  # the journal that keeps finished batches, given every request of the run
    progress: bool


@dataclass(frozen=True)
class Predicted:
    """What predict() hands on: one prediction (an index: of a label, an option, or NO_LABEL) and a detail row per
    test item, with what measuring needs."""

    requests: list[ScoringRequest]  # per test item, for the demonstrations it saw
    predictions: list[int]
    details: list[dict[str, Any]]  # predictions.jsonl's columns of the kind: scores, probabilities, generations ...
    stats: ScoringStats
    inference_tokens: int
    resumed: int = 0  # test items an earlier, interrupted process of this run had finished
    probabilities: np.ndarray | None = None  # rank scorers: the label distribution of each item
    uncalibrated: tuple[list[int], np.ndarray] | None = None  # calibrated runs: predictions and distribution before
    calibration_scores: list[dict[str, Any]] | None = None
    chosen: dict[str, list[int]] | None = None  # per metric, the option chosen per item (acc, acc_norm, ...)
    loglikelihoods: list[float] | None = None  # cloze, perplexity: per item
    target_bytes: list[int] | None = None  # cloze, perplexity: the UTF-8 length of the scored text per item


@dataclass(frozen=True)
class Measured:
    metrics: dict[str, float]
    stderr: dict[str, float]
    by: dict[str, dict[str, float]] | None = None  # task.metrics_by
    uncalibrated: dict[str, float] | None = None  # a calibrated run's metrics before calibration (same scores)


class TaskKind(ABC):
    name: ClassVar[str]  # `kind:` in a task file
    title: ClassVar[str]  # in messages: "a multiple-choice task"
    answers: ClassVar[Answers]
    lmeval_output_type: ClassVar[str]  # lm-evaluation-harness's output_type for a task of this kind
    metrics: ClassVar[tuple[str, ...] | None] = None  # what it can compute; None: a classification's (any hub metric)
    template_answer: ClassVar[bool] = True  # its templates place the answer ({{ answer }}); else they render a text
    answer_rules: ClassVar[int | None] = None  # how its answers are compared, versioned: part of its run keys

    def lmeval_output_type_for(self, scorer: str) -> str:
        """lm-evaluation-harness's output_type for a run of this kind by this scorer."""
        return self.lmeval_output_type

    def metric_names(self, task: TaskConfig) -> tuple[str, ...] | None:
        """The metrics a task of this kind can record (None: any that is built in or on the hub)."""
        return self.metrics

    def check(self, config: RunConfig) -> None:
        """Settings this kind rules out, in one line each (before anything loads)."""

    def check_template(self, template: Template, config: RunConfig) -> None:
        """A template that cannot serve this run (before anything loads)."""

    def suits(self, template: Template, config: RunConfig) -> bool:
        """template=all: whether the template is one of the run's (classification: channel templates for
        scorer=channel only)."""
        return True

    def requests_per_item(self, items: Items) -> int:
        """How many scoring requests each test item makes (what an interrupted run counts finished items by)."""
        return 1

    @abstractmethod
    def predict(self, items: Items) -> Predicted:
        """Prompts -> requests -> the backend's scores -> one prediction per test item."""

    @abstractmethod
    def measure(self, task: TaskConfig, labels: Sequence[str], examples: Sequence[Example],
                predicted: Predicted) -> Measured:
        """Predictions -> the task's metrics with their standard errors."""

    def prediction_text(self, prediction: int, labels: Sequence[str]) -> str | None:
        """predictions.jsonl's `prediction`: the label's name (or the option's index), None when there is none."""
        return None if prediction < 0 else labels[prediction]


def check_own_answers(kind: TaskKind, config: RunConfig) -> None:
    """What a task whose items bring their own answers rules out: labels, and the settings that need one set of
    labels."""
    from harness.kinds.calibration import calibration  # the classification kind's registry

    task = config.task
    if task.labels:
        raise HarnessError(f"task '{task.name}' is {kind.title} (kind: {kind.name}): its items bring their answers, "
                           "so it has no labels")
    unsupported = {"scorer": config.scorer != "rank", "calibration": calibration(config.calibration).calibrates,
                   "normalize": config.normalize != "sum"}
    for key, refused in unsupported.items():
        if refused:
            raise HarnessError(f"{key}={getattr(config, key)} needs one set of labels; task '{task.name}' is "
                               f"{kind.title} (its items bring their own answers; metrics: {', '.join(task.metrics)})")
    if config.demos == "balanced":
        raise HarnessError(f"demos=balanced needs labels; task '{task.name}' is {kind.title}")


def measure_items(task: TaskConfig, examples: Sequence[Example],
                  inputs_of: Callable[[str, Sequence[int]], MetricInputs]) -> Measured:
    """The task's metrics with their standard errors over the items; with task.metrics_by, each value's metrics and
    their mean over the values (`<metric>_macro`, each value counting once whatever its size: lm-evaluation-harness's
    macro). `inputs_of(metric, rows)` gives what the metric is computed from, for those items."""

    def metrics_of(rows: Sequence[int]) -> tuple[dict[str, float], dict[str, float]]:
        metrics: dict[str, float] = {}
        stderr: dict[str, float] = {}
        for name in task.metrics:
            values, error = measure(name, inputs_of(name, rows))
            metrics.update(values)
            if error is not None:
                stderr[name] = error
        return metrics, stderr

    metrics, stderr = metrics_of(range(len(examples)))
    if task.metrics_by is None:
        return Measured(metrics, stderr)
    values = [str(example.fields[task.metrics_by]) for example in examples]
    by = {}
    for value in sorted(set(values)):
        group, _ = metrics_of([i for i, v in enumerate(values) if v == value])
        by[value] = {**group, "n": values.count(value)}
    for name in task.metrics:
        metrics[f"{name}{MACRO}"] = float(np.mean([group[name] for group in by.values()]))
    return Measured(metrics, stderr, by)


KINDS: dict[str, TaskKind] = {}


def register_kind(kind: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: the kind becomes available as `kind: <its name>`."""
    KINDS[kind.name] = kind()
    return kind


def task_kind(name: str) -> TaskKind:
    """The registered kind `name` (HarnessError naming the kinds when there is none)."""
    if name not in all_kinds():
        raise HarnessError(f"unknown task kind '{name}' (kinds: {', '.join(KINDS)})")
    return KINDS[name]


def all_kinds() -> dict[str, TaskKind]:
    """Every registered kind by name, the built-in ones first."""
    for module in BUILTIN:
        importlib.import_module(module)  # registers it, once
    return KINDS
