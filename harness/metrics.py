"""Predictions -> metrics, through evaluate's Metric interface.

`evaluate.load("accuracy")` fetches its script from the hub, so the metrics a task can name
are defined here as evaluate.Metric modules and work offline. A name that is not defined
here is passed to evaluate.load (online users get every hub metric).
"""

from __future__ import annotations

from typing import Sequence

import datasets
import evaluate

from harness.errors import HarnessError
from harness.hub import require_hub

NO_LABEL = -1  # a prediction that names no label (an unparsable generation): always wrong
_LABEL_PAIRS = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Share of predictions equal to the reference label.",
            citation="",
            inputs_description="predictions, references: label indices",
            features=_LABEL_PAIRS,
        )

    def _compute(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        correct = sum(int(p == r) for p, r in zip(predictions, references))
        return {"accuracy": correct / len(references)}


class MacroF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=(
                "Unweighted mean of per-label F1 over the labels that occur in the references or the "
                "predictions (as scikit-learn's f1_score(average='macro')); a label never predicted and "
                "never correct scores 0. NO_LABEL predictions are misses of their gold label, not a label."
            ),
            citation="",
            inputs_description="predictions, references: label indices",
            features=_LABEL_PAIRS,
        )

    def _compute(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        f1s = []
        for label in sorted((set(predictions) | set(references)) - {NO_LABEL}):
            true_pos = sum(1 for p, r in zip(predictions, references) if p == r == label)
            false_pos = sum(1 for p, r in zip(predictions, references) if p == label != r)
            false_neg = sum(1 for p, r in zip(predictions, references) if r == label != p)
            denominator = 2 * true_pos + false_pos + false_neg
            f1s.append(2 * true_pos / denominator if denominator else 0.0)
        return {"macro_f1": sum(f1s) / len(f1s)}


BUILTIN_METRICS: dict[str, type[evaluate.Metric]] = {"accuracy": Accuracy, "macro_f1": MacroF1}


def load_metric(name: str) -> evaluate.EvaluationModule:
    if name in BUILTIN_METRICS:
        return BUILTIN_METRICS[name]()
    require_hub(f"metric '{name}'", hint=f"built-in metrics: {', '.join(BUILTIN_METRICS)}")
    try:
        return evaluate.load(name)
    except Exception as error:  # evaluate raises many types; the user needs the message only
        raise HarnessError(f"cannot load metric '{name}': {str(error).splitlines()[0]}") from None


def compute_metrics(names: Sequence[str], predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    results: dict[str, float] = {}
    for name in names:
        results.update(load_metric(name).compute(predictions=list(predictions), references=list(references)))
    return results
