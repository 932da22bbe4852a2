"""Demonstration selection: which k examples of the demonstration split a run shows.

The same (pool, k, seed, strategy) always gives the same examples in the same order, so a
fine-tuning run with seed s and k shots can train on exactly what the ICL run showed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.data import Example
from harness.errors import HarnessError

STRATEGIES = ("random", "balanced", "first_n")


def select_demonstrations(
    pool: Sequence[Example], k: int, seed: int, strategy: str, labels: Sequence[str]
) -> list[Example]:
    if k < 0:
        raise HarnessError(f"shots must be >= 0, got {k}")
    if strategy not in STRATEGIES:
        raise HarnessError(f"unknown demos strategy '{strategy}' (choose from: {', '.join(STRATEGIES)})")
    if k == 0:
        return []
    if k > len(pool):
        raise HarnessError(f"shots={k} but the demonstration pool holds only {len(pool)} examples")
    if strategy == "first_n":  # the pool's first k rows, the same for every seed (lm-evaluation-harness's first_n)
        return list(pool[:k])
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
    return _balanced(pool, k, rng, labels)


def _balanced(pool: Sequence[Example], k: int, rng: np.random.Generator, labels: Sequence[str]) -> list[Example]:
    """k // L examples of every label, the remainder to randomly chosen labels, then shuffled."""
    by_label = {label: [i for i, example in enumerate(pool) if example.label == label] for label in labels}
    counts = {label: k // len(labels) for label in labels}
    for label in rng.choice(list(labels), size=k % len(labels), replace=False):
        counts[str(label)] += 1
    chosen: list[int] = []
    for label in labels:
        if counts[label] > len(by_label[label]):
            raise HarnessError(
                f"demos=balanced needs {counts[label]} examples of label '{label}' but the pool has {len(by_label[label])}"
            )
        chosen.extend(rng.choice(by_label[label], size=counts[label], replace=False).tolist())
    return [pool[i] for i in rng.permutation(chosen)]
