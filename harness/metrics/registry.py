"""Metrics as registered objects: each one's name, how it aggregates the items and its standard error, whether
higher is better, its title in reports and its name in lm-evaluation-harness's files. Every list of metrics
elsewhere (the report's columns, what `report metric=` accepts, the leaderboard's, what the lm-evaluation-harness
export writes, what a task may name) is read from here, so none can drift from another.

Names derived from a registered one need no entry of their own: `exact_match_<filter>` (a short-answer task's
named extraction, GSM8K's strict and flexible), `<metric>_macro` (the mean over the values of task.metrics_by,
MMLU's subjects) and `uncalibrated_<metric>` (a calibrated run's metric before calibration).

A task may also name any metric of the Hugging Face hub (`evaluate.load`); it is computed from the predictions
and the references, and reported as higher-is-better.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.metrics.functions import (
    accuracy,
    best_option,
    correctness_stderr,
    macro_f1,
    macro_f1_stderr,
    most_informative_option,
)
from harness.sources.hub import require_hub

if TYPE_CHECKING:
    import evaluate


@dataclass(frozen=True)
class MetricInputs:
    """Everything a metric is computed from, per test item (what a kind has)."""

    predictions: Sequence[int] = ()  # label or option indices (NO_LABEL: none)
    references: Sequence[int] = ()
    loglikelihoods: Sequence[float] = ()  # of each item's scored text (cloze target, perplexity document)
    words: Sequence[int] = ()  # words of each item's counted text (perplexity)
    text_bytes: Sequence[int] = ()  # UTF-8 bytes of each item's scored (cloze) or counted (perplexity) text


@dataclass(frozen=True)
class Options:
    """Multiple-choice items as a metric that picks an option sees them."""

    loglikelihoods: Sequence[Sequence[float]]  # per item, per option
    texts: Sequence[Sequence[str]]  # per item, per option
    unconditional: Sequence[Sequence[float]] | None = None  # per item, per option: after the prefix token alone


Choose = Callable[[Options], list[int]]
Compute = Callable[[MetricInputs], float]
StandardError = Callable[[MetricInputs], "float | None"]


@dataclass(frozen=True)
class Metric:
    name: str
    title: str  # in reports
    compute: Compute | None  # None: the kind computes it itself (ece from the label distribution)
    standard_error: StandardError | None = None  # over the test items; None: none (a ratio of sums)
    higher_is_better: bool = True
    lmeval_name: str | None = None  # lm-evaluation-harness's name, where it differs
    per_item: bool = False  # the mean of a right/wrong per item: paired tests, leaderboards, lm-eval samples
    # multiple choice: how the metric picks an item's option from the options' log-likelihoods (and texts, and with
    # needs_unconditional their log-likelihoods without context); None: not a way of choosing an option
    choose: Choose | None = None
    needs_options: bool = False  # a classification task cannot have it (its labels are not options)
    needs_unconditional: bool = False  # costs a request per distinct option: computed only when a task lists it
    in_report: bool = True  # a column of the report's tables (no_label_rate is only noted in the record)
    diagnostic: bool = False  # recorded beside the task's own metrics, never named by a task (ECE, no-label rate)

    @property
    def exported_name(self) -> str:
        return self.lmeval_name or self.name


def _correctness(inputs: MetricInputs) -> float:
    return accuracy(inputs.predictions, inputs.references)


def _correctness_se(inputs: MetricInputs) -> float | None:
    return correctness_stderr(inputs.predictions, inputs.references)


def _perplexity(inputs: MetricInputs) -> float:
    """exp of minus the mean per-item log-likelihood (per item, not per token: lm-evaluation-harness's LAMBADA)."""
    return float(math.exp(-np.asarray(inputs.loglikelihoods, dtype=np.float64).mean()))


def _perplexity_se(inputs: MetricInputs) -> float | None:
    """The delta method's: perplexity times the standard error of the mean log-likelihood (lm-evaluation-harness
    bootstraps it)."""
    values = np.asarray(inputs.loglikelihoods, dtype=np.float64)
    if len(values) < 2:
        return None
    return float(_perplexity(inputs) * values.std(ddof=1) / math.sqrt(len(values)))


def _total(inputs: MetricInputs) -> float:
    return float(np.sum(np.asarray(inputs.loglikelihoods, dtype=np.float64)))


def _bits_per_byte(inputs: MetricInputs) -> float:
    """Minus the summed log-likelihood in bits over the summed UTF-8 bytes (a weighted mean)."""
    return -_total(inputs) / max(sum(inputs.text_bytes), 1) / math.log(2)


def _word_perplexity(inputs: MetricInputs) -> float:
    return math.exp(-_total(inputs) / max(sum(inputs.words), 1))


def _byte_perplexity(inputs: MetricInputs) -> float:
    return math.exp(-_total(inputs) / max(sum(inputs.text_bytes), 1))


def _accuracy_like(name: str, title: str, **details: object) -> Metric:
    return Metric(name, title, _correctness, _correctness_se, per_item=True, **details)


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    _accuracy_like("accuracy", "accuracy", lmeval_name="acc"),
    Metric("macro_f1", "macro-F1", lambda i: macro_f1(i.predictions, i.references),
           lambda i: macro_f1_stderr(i.predictions, i.references), lmeval_name="f1"),
    # multiple choice (harness/kinds/multiple_choice.py): the same accuracy, of options chosen four ways, as
    # lm-evaluation-harness's acc, acc_norm (per character), acc_bytes and acc_mutual_info
    _accuracy_like("acc", "acc", choose=lambda o: best_option(o.loglikelihoods, o.texts, None)),
    _accuracy_like("acc_norm", "acc_norm", choose=lambda o: best_option(o.loglikelihoods, o.texts, "characters"),
                   needs_options=True),
    _accuracy_like("acc_bytes", "acc_bytes", choose=lambda o: best_option(o.loglikelihoods, o.texts, "bytes"),
                   needs_options=True),
    _accuracy_like("acc_mutual_info", "acc_mutual_info", needs_options=True, needs_unconditional=True,
                   choose=lambda o: most_informative_option(o.loglikelihoods, o.unconditional)),
    # short answers (harness/kinds/short_answer.py): the share of generated answers that match an accepted one
    _accuracy_like("exact_match", "exact match"),
    # from log-likelihoods (cloze and perplexity tasks)
    Metric("perplexity", "perplexity", _perplexity, _perplexity_se, higher_is_better=False),
    Metric("word_perplexity", "word perplexity", _word_perplexity, higher_is_better=False),
    Metric("byte_perplexity", "byte perplexity", _byte_perplexity, higher_is_better=False),
    Metric("bits_per_byte", "bits per byte", _bits_per_byte, higher_is_better=False),
    # computed by the classification kind beside the task's own
    Metric("ece", "ECE", None, higher_is_better=False, diagnostic=True),
    Metric("no_label_rate", "no-label rate", None, higher_is_better=False, in_report=False, diagnostic=True),
)}
NAMED_EXTRACTION = "exact_match_"  # + the name of a short-answer task's answer filter
MACRO = "_macro"  # + nothing: the mean over the values of task.metrics_by
UNCALIBRATED = "uncalibrated_"


def metric(name: str) -> Metric | None:
    """The registered metric `name`, or the one it is derived from (renamed, retitled); None for any other name
    (a hub metric, or nothing)."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith(NAMED_EXTRACTION):
        base = METRICS["exact_match"]
        extraction = name.removeprefix(NAMED_EXTRACTION)
        return replace(base, name=name, title=f"{base.title} ({extraction})", lmeval_name=None)
    if name.endswith(MACRO) and name.removesuffix(MACRO) in METRICS:
        base = METRICS[name.removesuffix(MACRO)]
        return replace(base, name=name, title=f"{base.title} (macro average)", lmeval_name=None,
                       compute=None, standard_error=None)
    if name.startswith(UNCALIBRATED) and name.removeprefix(UNCALIBRATED) in METRICS:
        base = METRICS[name.removeprefix(UNCALIBRATED)]
        return replace(base, name=name, title=f"uncalibrated {base.title}", lmeval_name=None)
    return None


def reported(names: Sequence[str]) -> list[str]:
    """Of these names, the metrics the report shows, in the registry's order."""
    return order([name for name in names if (known := metric(name)) is not None and known.in_report])


def diagnostic(name: str) -> bool:
    known = metric(name)
    return known is not None and known.diagnostic


def choosable(name: str) -> bool:
    """A metric the report can rank and plot by (`report metric=`): one a task records, not a diagnostic of it
    (ECE) or one of its variants (before calibration, mean over metrics_by values)."""
    known = metric(name)
    return (known is not None and not known.diagnostic and known.in_report
            and not name.startswith(UNCALIBRATED) and not name.endswith(MACRO))


def leaderboard_metric(name: str) -> bool:
    """A metric a leaderboard cell can show: computed over the items, higher is better."""
    known = metric(name)
    return known is not None and choosable(name) and known.higher_is_better


def higher_is_better(name: str) -> bool:
    known = metric(name)
    return True if known is None else known.higher_is_better


def title(name: str) -> str:
    known = metric(name)
    return name if known is None else known.title


def order(names: Sequence[str]) -> list[str]:
    """Metric names in the registry's order: `exact_match_<filter>` after exact_match, `<metric>_macro` before it
    (after the multiple-choice ones), other names (hub metrics) after the registered ones, and every
    `uncalibrated_<metric>` last, in its metric's place."""
    position = {name: float(index) for index, name in enumerate(METRICS)}
    answers = position["exact_match"]

    def key(name: str) -> tuple[int, float, str]:
        if name.startswith(UNCALIBRATED):
            return (2, position.get(name.removeprefix(UNCALIBRATED), len(position)), name)
        if name.endswith(MACRO) and name.removesuffix(MACRO) in METRICS:
            return (0, answers - 0.5, name)
        if name.startswith(NAMED_EXTRACTION):
            return (0, answers + 0.5, name)
        return (0 if name in position else 1, position.get(name, len(position)), name)

    return sorted(dict.fromkeys(names), key=key)


def measure(name: str, inputs: MetricInputs) -> tuple[dict[str, float], float | None]:
    """A metric's value (a hub metric may give several, under its own names) and its standard error, if any."""
    known = metric(name)
    if known is not None and known.compute is not None:
        error = known.standard_error(inputs) if known.standard_error is not None else None
        return {name: known.compute(inputs)}, error
    values = _hub_metric(name).compute(predictions=list(inputs.predictions), references=list(inputs.references))
    return dict(values), None


def measure_all(names: Sequence[str], inputs: MetricInputs) -> tuple[dict[str, float], dict[str, float]]:
    """measure() of each name over the same inputs: the values and the standard errors there are."""
    values: dict[str, float] = {}
    errors: dict[str, float] = {}
    for name in names:
        value, error = measure(name, inputs)
        values.update(value)
        if error is not None:
            errors[name] = error
    return values, errors


def check_available(names: Sequence[str]) -> None:
    """Every metric a task names, loaded now, before any scoring: an unknown name fails first, not last."""
    for name in names:
        known = metric(name)
        if known is None:
            _hub_metric(name)
        elif known.compute is None:
            raise HarnessError(f"metric '{name}' is recorded beside a task's own metrics (ECE, the no-label rate, "
                               "the macro averages of metrics_by), not named in task.metrics")


@functools.cache
def _hub_metric(name: str) -> evaluate.EvaluationModule:
    require_hub(f"metric '{name}'", hint=f"built-in metrics: {', '.join(METRICS)}")
    import evaluate  # only here: built-in metrics do not pay for the import

    try:
        return evaluate.load(name)
    except Exception as error:  # evaluate raises many types; the user needs the message only
        raise HarnessError(f"cannot load metric '{name}': {str(error).splitlines()[0]}") from None
