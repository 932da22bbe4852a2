"""Label scores -> label distributions: the calibrations of rank classification (registered by name, `calibration=`),
and ECE.

Rank classification gives one score per label (its log-probability); the label distribution is
their softmax over the labels. Calibration reweights that distribution:

- contextual (Zhao et al. 2021): p_cf is the mean label distribution over content-free inputs
  ("N/A", "", "[MASK]") in the same prompt; the calibrated distribution is p / p_cf, renormalised
  (W = diag(p_cf)^-1, b = 0);
- pmi (Holtzman et al. 2021): each label's score minus its score after the domain premise alone
  ("Sentiment:"), i.e. log p(y | x) - log p(y | premise).

A calibration adds a few prompts per demonstration set (scored in the same pass as the items, so they share its
prefix) and turns each item's label scores and its set's extra scores into a distribution and a prediction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.inputs.prompts import Prompt, Template, content_free_prompt, domain_premise_prompt

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.inputs.data import Example

ECE_BINS = 10


def label_distribution(scores: Sequence[Sequence[float]]) -> np.ndarray:
    """Softmax over labels of each row of log-probability scores; shape (examples, labels)."""
    values = np.asarray(scores, dtype=np.float64)
    values = values - values.max(axis=1, keepdims=True)
    exp = np.exp(values)
    return exp / exp.sum(axis=1, keepdims=True)


def content_free_distribution(scores: Sequence[Sequence[float]]) -> np.ndarray:
    """p_cf: the mean label distribution over the content-free inputs' scores (one row per input)."""
    return label_distribution(scores).mean(axis=0)


def contextual_calibration(probabilities: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """p / p_cf, renormalised; `content_free` is p_cf for all rows (labels,) or one per row (examples, labels)."""
    calibrated = np.asarray(probabilities, dtype=np.float64) / np.asarray(content_free, dtype=np.float64)
    return calibrated / calibrated.sum(axis=1, keepdims=True)


def pmi_scores(scores: Sequence[Sequence[float]], premise_scores: Sequence[float]) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64) - np.asarray(premise_scores, dtype=np.float64)


def argmax_first(values: np.ndarray) -> list[int]:
    """Index of the best label per row; ties go to the first label."""
    return np.asarray(values).argmax(axis=1).tolist()


def expected_calibration_error(probabilities: np.ndarray, references: Sequence[int], bins: int = ECE_BINS) -> float:
    """Expected calibration error of the predicted label's probability, over `bins` equal-width bins in (0, 1]:
    sum over bins of (share of examples in the bin) x |accuracy - mean confidence| (Guo et al. 2017)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(references)
    bin_of = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (0.1, 0.2] -> bin 1
    error = 0.0
    for index in range(bins):
        members = bin_of == index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


class Calibration(ABC):
    name: ClassVar[str]
    calibrates: ClassVar[bool] = True  # changes the distribution (none does not)

    def check(self, config: RunConfig) -> None:
        """Settings it needs, in one line (before anything loads)."""

    @abstractmethod
    def prompts(self, template: Template, demonstrations: Sequence[Example], fields: Sequence[str],
                config: RunConfig) -> list[Prompt]:
        """The extra prompts one demonstration set needs."""

    @abstractmethod
    def apply(self, scores: np.ndarray, extra: list[list[list[float]]]) -> tuple[np.ndarray, list[int]]:
        """The label distribution and prediction of each item, from its label scores (items, labels) and the
        scores of its demonstration set's extra prompts (per item: per prompt, per label)."""


CALIBRATIONS: dict[str, Calibration] = {}


def register_calibration(kind: type[Calibration]) -> type[Calibration]:
    CALIBRATIONS[kind.name] = kind()
    return kind


def calibrated(name: str) -> bool:
    """Whether a recorded run's calibration changed its distribution (an unknown name counts as calibrated)."""
    return name not in CALIBRATIONS or CALIBRATIONS[name].calibrates


def calibration(name: str) -> Calibration:
    if name not in CALIBRATIONS:
        raise HarnessError(f"unknown calibration '{name}' (calibrations: {', '.join(CALIBRATIONS)})")
    return CALIBRATIONS[name]


@register_calibration
class NoCalibration(Calibration):
    name = "none"
    calibrates = False

    def prompts(self, template: Template, demonstrations: Sequence[Example], fields: Sequence[str],
                config: RunConfig) -> list[Prompt]:
        return []

    def apply(self, scores: np.ndarray, extra: list[list[list[float]]]) -> tuple[np.ndarray, list[int]]:
        return label_distribution(scores), argmax_first(scores)


@register_calibration
class ContextualCalibration(Calibration):
    name = "contextual"

    def check(self, config: RunConfig) -> None:
        if not config.content_free_inputs:
            raise HarnessError("calibration=contextual needs at least one content-free input (content_free_inputs=[...])")

    def prompts(self, template: Template, demonstrations: Sequence[Example], fields: Sequence[str],
                config: RunConfig) -> list[Prompt]:
        return [content_free_prompt(template, demonstrations, fields, text) for text in config.content_free_inputs]

    def apply(self, scores: np.ndarray, extra: list[list[list[float]]]) -> tuple[np.ndarray, list[int]]:
        content_free: dict[int, np.ndarray] = {}  # per demonstration set (its rows are one list object)
        for rows in extra:
            if id(rows) not in content_free:
                content_free[id(rows)] = content_free_distribution(rows)
        probabilities = contextual_calibration(label_distribution(scores),
                                               np.stack([content_free[id(rows)] for rows in extra]))
        return probabilities, argmax_first(probabilities)


@register_calibration
class PointwiseMutualInformation(Calibration):
    name = "pmi"

    def prompts(self, template: Template, demonstrations: Sequence[Example], fields: Sequence[str],
                config: RunConfig) -> list[Prompt]:
        return [domain_premise_prompt(template, demonstrations, fields)]

    def apply(self, scores: np.ndarray, extra: list[list[list[float]]]) -> tuple[np.ndarray, list[int]]:
        adjusted = pmi_scores(scores, [rows[0] for rows in extra])
        return label_distribution(adjusted), argmax_first(adjusted)
