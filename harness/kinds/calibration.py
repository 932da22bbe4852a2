"""Label scores -> label distributions: contextual calibration, domain-conditional PMI, and ECE.

Rank classification gives one score per label (its log-probability); the label distribution is
their softmax over the labels. Calibration reweights that distribution:

- contextual (Zhao et al. 2021): p_cf is the mean label distribution over content-free inputs
  ("N/A", "", "[MASK]") in the same prompt; the calibrated distribution is p / p_cf, renormalised
  (W = diag(p_cf)^-1, b = 0);
- pmi (Holtzman et al. 2021): each label's score minus its score after the domain premise alone
  ("Sentiment:"), i.e. log p(y | x) - log p(y | premise).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CALIBRATIONS = ("none", "contextual", "pmi")
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
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
