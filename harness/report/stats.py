"""The report's statistics: paired tests of fine-tuning against ICL, break-even queries, win rates.

Pure functions of numbers and arrays (no files), so each can be checked on a case computed by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.metrics.registry import metric as registered

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so the same records always give the same interval
EXACT_BELOW = 25  # McNemar: exact binomial test below this many discordant items, chi-square from it on
ABSENT = -2  # label index of an item a paired run did not score


@dataclass(frozen=True)
class McNemar:
    icl_only: int  # b: items ICL got right and fine-tuning wrong
    finetuned_only: int  # c: items fine-tuning got right and ICL wrong
    statistic: float  # chi-square with continuity correction; the exact test reports min(b, c)
    p_value: float  # two-sided
    exact: bool


def mcnemar(icl_only: int, finetuned_only: int) -> McNemar:
    """McNemar's test on the discordant counts b and c.

    Below EXACT_BELOW discordant items the exact binomial test (b ~ Binomial(b + c, 1/2), two-sided:
    twice the smaller tail, at most 1); from there on the chi-square approximation with Edwards'
    continuity correction, (|b - c| - 1)^2 / (b + c) on 1 degree of freedom (the correction floored at
    0, so b = c gives p = 1).
    """
    b, c = icl_only, finetuned_only
    discordant = b + c
    if discordant < EXACT_BELOW:
        tail = sum(math.comb(discordant, i) for i in range(min(b, c) + 1)) / 2**discordant
        return McNemar(b, c, float(min(b, c)), min(1.0, 2 * tail), exact=True)
    statistic = max(abs(b - c) - 1, 0) ** 2 / discordant
    # chi-square with 1 degree of freedom: P(X > s) = P(|Z| > sqrt(s)) = erfc(sqrt(s / 2))
    return McNemar(b, c, statistic, math.erfc(math.sqrt(statistic / 2)), exact=False)


def discordant_counts(gold: np.ndarray, icl: np.ndarray, finetuned: np.ndarray) -> tuple[int, int]:
    """b and c pooled over every paired run (rows) and item (columns) both scored."""
    present = gold != ABSENT
    icl_right, finetuned_right = (icl == gold) & present, (finetuned == gold) & present
    return int((icl_right & ~finetuned_right).sum()), int((finetuned_right & ~icl_right).sum())


def weighted_metric(metric: str, weights: np.ndarray, gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """`metric` of one run for each row of `weights` (how often each item is drawn; 0 leaves it out).

    Macro-F1 is computed as harness/metrics/functions.py does: the mean F1 over the labels that occur in the
    drawn references or predictions.
    """
    present = gold != ABSENT
    if (known := registered(metric)) is not None and known.per_item:  # a mean of right/wrong per item
        with np.errstate(invalid="ignore"):  # a draw of none of this run's items: NaN, left out of the interval
            return weights @ ((gold == predicted) & present) / (weights @ present)
    f1_sum = np.zeros(len(weights))
    labels_seen = np.zeros(len(weights))
    for label in np.union1d(gold[present], predicted[present & (predicted >= 0)]):
        true_pos = weights @ ((gold == label) & (predicted == label))
        false_pos = weights @ ((predicted == label) & (gold != label))
        false_neg = weights @ ((gold == label) & (predicted != label))
        denominator = 2 * true_pos + false_pos + false_neg  # > 0 exactly when the label occurs in the draw
        f1_sum += np.divide(2 * true_pos, denominator, out=np.zeros(len(weights)), where=denominator > 0)
        labels_seen += denominator > 0
    with np.errstate(invalid="ignore"):
        return f1_sum / labels_seen


def paired_bootstrap(
    metric: str, gold: np.ndarray, icl: np.ndarray, finetuned: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """Fine-tuning minus ICL in `metric`, averaged over paired runs, with a 95% percentile interval.

    Rows are paired runs (same task, model, template, shots, seed, ...), columns the union of their
    test items (gold ABSENT where a run lacks one), values label indices. A resample draws the test
    items with replacement and uses the same draw in every row, so an item's seeds move together:
    the interval is the uncertainty due to the test set, not to the choice of seeds (that spread is
    the summary's std over seeds).
    """
    observed, draws = bootstrap_differences(metric, gold, icl, finetuned, np.random.default_rng(seed), resamples)
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return observed, float(low), float(high)


def bootstrap_differences(
    metric: str, gold: np.ndarray, first: np.ndarray, second: np.ndarray, rng: np.random.Generator,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, np.ndarray]:
    """second minus first in `metric` (mean over the rows, paired runs), observed and in each of `resamples`
    draws of the test items with replacement (the same draw for every row)."""
    def difference(weights: np.ndarray) -> np.ndarray:
        per_pair = [weighted_metric(metric, weights, g, s) - weighted_metric(metric, weights, g, f)
                    for g, f, s in zip(gold, first, second)]
        return np.mean(per_pair, axis=0)

    items = gold.shape[1]
    draws = [difference(rng.multinomial(items, np.full(items, 1 / items), size=size).astype(float))
             for size in _chunks(resamples, 250)]  # bounded memory for large test sets
    return float(difference(np.ones((1, items)))[0]), np.concatenate(draws)


def separable_ranks(better: np.ndarray) -> np.ndarray:
    """Ranks that only separate what a test separates: better[i, j] is True when entry j is significantly
    better than entry i; entry i's rank is 1 + the number of entries significantly better than it, so entries
    no test tells apart share a rank."""
    return 1 + better.sum(axis=1)


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def break_even_queries(
    train_flops: float, parameters: float, icl_tokens_per_query: float, finetuned_tokens_per_query: float,
) -> float:
    """Queries after which fine-tuning has cost fewer FLOPs than k-shot ICL (inf: never).

    A forward pass costs 2N FLOPs per token (N parameters); ICL pays for its demonstrations at every
    query, a fine-tuned model paid once, in training:
    break-even = training FLOPs / (2N x (ICL tokens per query - fine-tuned tokens per query)).
    """
    saved_per_query = 2 * parameters * (icl_tokens_per_query - finetuned_tokens_per_query)
    return train_flops / saved_per_query if saved_per_query > 0 else math.inf


def win_rates(scores: pd.Series) -> pd.Series:
    """Each entry's share of the other entries it beats (a tie counts half); NaN without competitors.

    With average ranks (1 = lowest), the entries an entry beats plus half of those it ties are
    exactly its rank - 1.
    """
    if len(scores) < 2:
        return pd.Series(np.nan, index=scores.index)
    return (scores.rank(method="average") - 1) / (len(scores) - 1)
