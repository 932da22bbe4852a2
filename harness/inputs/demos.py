"""Demonstration selection: which k examples of the demonstration split each test example sees.

Two kinds of strategy:
- one set for the whole run (random, balanced, first_n, ids): the same (pool, k, seed, strategy)
  always gives the same examples, so a fine-tuning run with seed s and k shots can train on
  exactly what the ICL run showed;
- one set per test example (bm25, tfidf, embedding: its k nearest neighbours in the pool).

Then the order: as drawn (retrieval: the nearest neighbour last, next to the query, as in Liu et
al. 2022), shuffled with the run's seed, or a given permutation of positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.inputs.data import Example
from harness.inputs.retrieval import RETRIEVERS, nearest_neighbours

FIXED_STRATEGIES = ("random", "balanced", "first_n", "ids")
STRATEGIES = (*FIXED_STRATEGIES, *RETRIEVERS)
ORDERS = ("drawn", "shuffled")
_SHUFFLE_STREAM = 1  # a second random stream of the run seed: shuffling never changes which examples are drawn


def select_demonstrations(
    pool: Sequence[Example], k: int, seed: int, strategy: str, labels: Sequence[str],
    ids: Sequence[str] | None = None,
) -> list[Example]:
    """The run's one demonstration set, in drawn order (strategies that pick per example are refused)."""
    _check_k(pool, k, strategy)
    if strategy not in FIXED_STRATEGIES:
        raise HarnessError(f"demos={strategy} picks demonstrations per test example; this needs one set for the run")
    if k == 0:
        return []
    if strategy == "ids":
        return _by_ids(pool, k, ids)
    if strategy == "first_n":  # the pool's first k rows, the same for every seed (lm-evaluation-harness's first_n)
        return list(pool[:k])
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
    return _balanced(pool, k, rng, labels)


def demonstrations_per_example(
    examples: Sequence[Example], pool: Sequence[Example], k: int, seed: int, strategy: str,
    labels: Sequence[str], ids: Sequence[str] | None, order: Any, encoder: str | None = None,
    match: str | None = None, exclude_self: bool = False,
) -> list[list[Example]]:
    """Each test example's demonstrations, ordered: the same list for every example unless retrieving.

    match: only pool examples with the same value of this field (MMLU: the item's subject), so each value
    has its own set. exclude_self (the pool is the evaluation split itself): k + 1 are drawn and the item is
    never among its own demonstrations: it is left out if drawn, else the last drawn is (lm-evaluation-harness's
    rule)."""
    _check_order(order, k)
    extra = 1 if exclude_self and k else 0
    per_value: dict[Any, Sequence[Example]] = {}
    for example in examples:
        key = example.fields[match] if match else None
        if key not in per_value:
            per_value[key] = [e for e in pool if e.fields[match] == key] if match else pool
    for key, candidates in per_value.items():
        where = f" with {match}={key!r}" if match else ""
        _check_k(candidates, k, strategy, where, extra)
    if strategy in RETRIEVERS and k:
        return _retrieved(examples, per_value, k, extra, strategy, order, seed, encoder, match)
    drawn = {key: select_demonstrations(candidates, k + extra, seed, strategy, labels, ids)
             for key, candidates in per_value.items()}
    shared: dict[tuple[str, ...], list[Example]] = {}  # examples with the same demonstrations share one list
    result = []
    for example in examples:
        demos = drawn[example.fields[match] if match else None]
        if extra:
            demos = [demo for demo in demos if demo.id != example.id][:k]
        key = tuple(demo.id for demo in demos)
        if key not in shared:
            shared[key] = reorder(demos, order, seed)
        result.append(shared[key])
    return result


def _retrieved(examples: Sequence[Example], per_value: dict[Any, Sequence[Example]], k: int, extra: int,
               strategy: str, order: Any, seed: int, encoder: str | None, match: str | None) -> list[list[Example]]:
    """Each example's k nearest pool examples (within its match group), the nearest last, right before the query."""
    result: list[list[Example]] = [[] for _ in examples]
    for key, candidates in per_value.items():
        members = [i for i, example in enumerate(examples) if (example.fields[match] if match else None) == key]
        neighbours = nearest_neighbours(strategy, [_text(e) for e in candidates],
                                        [_text(examples[i]) for i in members], k + extra, encoder)
        for position, row in zip(members, neighbours):
            nearest = [candidates[i] for i in row if not extra or candidates[i].id != examples[position].id][:k]
            result[position] = reorder(list(reversed(nearest)), order, seed, position)
    return result


def reorder(demos: list[Example], order: Any, seed: int, stream: int = 0) -> list[Example]:
    """`order`: "drawn" (unchanged), "shuffled" (seeded; `stream` tells test examples apart), or a
    permutation: position i of the result holds drawn demonstration order[i]."""
    if order == "drawn" or not demos:
        return demos
    if order == "shuffled":
        rng = np.random.default_rng([seed, _SHUFFLE_STREAM, stream])
        return [demos[i] for i in rng.permutation(len(demos))]
    return [demos[i] for i in order]


def _check_k(pool: Sequence[Example], k: int, strategy: str, where: str = "", extra: int = 0) -> None:
    if k < 0:
        raise HarnessError(f"shots must be >= 0, got {k}")
    if strategy not in STRATEGIES:
        raise HarnessError(f"unknown demos strategy '{strategy}' (choose from: {', '.join(STRATEGIES)})")
    if k + extra > len(pool):
        also = " plus one to leave each item out of its own demonstrations" if extra else ""
        raise HarnessError(f"shots={k}{also} but the demonstration pool{where} holds only {len(pool)} examples")


def _check_order(order: Any, k: int) -> None:
    if order in ORDERS:
        return
    if isinstance(order, str) or not isinstance(order, Sequence) or sorted(order) != list(range(k)):
        raise HarnessError(
            f"demo_order must be drawn, shuffled or a permutation of 0..{k - 1} (one index per shot), got {order!r}"
        )


def _by_ids(pool: Sequence[Example], k: int, ids: Sequence[str] | None) -> list[Example]:
    if not ids or len(ids) != k:
        raise HarnessError(f"demos=ids needs demo_ids with exactly shots={k} example ids, got {list(ids or [])}")
    by_id = {example.id: example for example in pool}
    missing = [str(i) for i in ids if str(i) not in by_id]
    if missing:
        raise HarnessError(f"demo_ids not in the demonstration split: {', '.join(missing)}")
    return [by_id[str(i)] for i in ids]


def _text(example: Example) -> str:
    return " ".join(example.fields.values())


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
