"""What metrics are computed with (harness/metrics/registry.py names and registers them): accuracy and macro-F1 with
their standard errors, and how a short answer is taken out of a generation and compared with the accepted ones.

`accuracy` and `macro_f1` are defined here: they work offline (evaluate.load fetches metric
scripts from the hub) and a run does not pay the second or so of importing evaluate, whose
evaluator pulls in transformers' pipelines.
"""

from __future__ import annotations

import math
import re
import string
from typing import Sequence

import numpy as np

from harness.config import AnswerConfig, AnswerFilter
from harness.inputs.expressions import pattern_findall, pattern_sub

NO_LABEL = -1  # a prediction that names no label (an unparsable generation): always wrong


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of predictions equal to the reference label."""
    return sum(int(p == r) for p, r in zip(predictions, references)) / len(references)


def macro_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Unweighted mean of per-label F1 over the labels that occur in the references or the predictions
    (as scikit-learn's f1_score(average='macro')); a label never predicted and never correct scores 0.
    NO_LABEL predictions are misses of their gold label, not a label."""
    f1s = []
    for label in sorted((set(predictions) | set(references)) - {NO_LABEL}):
        true_pos = sum(1 for p, r in zip(predictions, references) if p == r == label)
        false_pos = sum(1 for p, r in zip(predictions, references) if p == label != r)
        false_neg = sum(1 for p, r in zip(predictions, references) if r == label != p)
        denominator = 2 * true_pos + false_pos + false_neg
        f1s.append(2 * true_pos / denominator if denominator else 0.0)
    return sum(f1s) / len(f1s)


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def correctness_stderr(predictions: Sequence[int], references: Sequence[int]) -> float | None:
    """Of a mean of right/wrong per item: the sample standard deviation of the correctness over sqrt(n), as
    lm-evaluation-harness reports; None for a single item."""
    n = len(references)
    if n < 2:
        return None
    correct = np.asarray(predictions) == np.asarray(references)
    return float(correct.std(ddof=1) / math.sqrt(n))


def macro_f1_stderr(predictions: Sequence[int], references: Sequence[int]) -> float | None:
    """The standard deviation of macro-F1 over BOOTSTRAP_RESAMPLES resamples of the items (seeded); None for a
    single item."""
    n = len(references)
    if n < 2:
        return None
    resamples = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    return float(np.std(_macro_f1_resampled(np.asarray(predictions), np.asarray(references), resamples), ddof=1))


def _macro_f1_resampled(predicted: np.ndarray, gold: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """macro_f1 of each resample (a row of item indices), vectorised: the same definition as macro_f1."""
    f1_sums = np.zeros(len(resamples))
    present = np.zeros(len(resamples))
    for label in sorted((set(predicted.tolist()) | set(gold.tolist())) - {NO_LABEL}):
        true_pos = ((predicted == label) & (gold == label))[resamples].sum(axis=1)
        false_pos = ((predicted == label) & (gold != label))[resamples].sum(axis=1)
        false_neg = ((gold == label) & (predicted != label))[resamples].sum(axis=1)
        occurs = ((predicted == label) | (gold == label))[resamples].any(axis=1)
        denominator = 2 * true_pos + false_pos + false_neg
        f1_sums += np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), 0.0) * occurs
        present += occurs
    return f1_sums / np.maximum(present, 1)


def best_option(loglikelihoods: Sequence[Sequence[float]], options: Sequence[Sequence[str]], by: str | None) -> list[int]:
    """The best option per item: highest log-likelihood, or per character / per byte of the option's text (the
    option's own text, without the whitespace before it); ties go to the first option."""
    chosen = []
    for values, texts in zip(loglikelihoods, options):
        lengths = {None: [1] * len(texts), "characters": [len(text) for text in texts],
                   "bytes": [len(text.encode("utf-8")) for text in texts]}[by]
        lengths = [max(length, 1) for length in lengths]  # an empty option: its total, not a division by zero
        chosen.append(int(np.argmax(np.asarray(values, dtype=np.float64) / np.asarray(lengths))))
    return chosen


def most_informative_option(loglikelihoods: Sequence[Sequence[float]],
                            unconditional: Sequence[Sequence[float]]) -> list[int]:
    """Per item, the option with the highest log P(option | context) - log P(option)."""
    return [int(np.argmax(np.asarray(values, dtype=np.float64) - np.asarray(alone)))
            for values, alone in zip(loglikelihoods, unconditional)]


def extracted_answer(generation: str, spec: AnswerFilter) -> str:
    """The answer a filter takes out of a generation (lm-evaluation-harness's RegexFilter, then take_first)."""
    matches = pattern_findall(spec.regex, generation)
    if not matches:
        return spec.fallback
    try:
        match = matches[spec.group_select]
    except IndexError:
        return spec.fallback
    if isinstance(match, tuple):  # several groups: the first that matched
        match = next((group for group in match if group), spec.fallback)
    return match.strip()


def matching_answer(answer: str, references: Sequence[str], spec: AnswerConfig) -> int | None:
    """The first reference the answer equals once both are normalised as lm-evaluation-harness's exact_match
    does (regexes removed, then lower case, then punctuation removed), or None."""
    def normal(text: str) -> str:
        for pattern in spec.regexes_to_ignore:
            text = pattern_sub(pattern, "", text)
        if spec.ignore_case:
            text = text.lower()
        if spec.ignore_punctuation:
            text = text.translate(_NO_PUNCTUATION)
        return text

    mine = normal(answer)
    return next((index for index, reference in enumerate(references) if normal(reference) == mine), None)


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word_perplexity: the pieces between runs of whitespace."""
    return len(re.split(r"\s+", text))


