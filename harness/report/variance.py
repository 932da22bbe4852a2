"""Where the variance of a score comes from: a balanced random-effects ANOVA over the sources of a study.

A study scores the same test items under every combination of its sources' levels (demonstration set,
order within the set, template, label words, training seed, ...). Each configuration's accuracy is

    y = mu + sum over terms U of e_U + item-sampling error,

with one random effect per source and per interaction of sources (a term), each of variance sigma2_U.
A source may be nested in another (the order of the demonstrations only means something within one
demonstration set: permutation 3 of set 1 and permutation 3 of set 2 share nothing), so a term holding it
holds its parent too.

The sums of squares are those of the balanced design (each term's effect is its cell means less the
effects of the terms it contains). The expected mean squares follow the usual rule for random effects:
E[MS_T] = N_T + sum over terms U containing T of c_U sigma2_U, with c_U the configurations per cell of U.
With one score per configuration, the highest term is confounded with measurement error; that error is
the sampling of test items, and it is correlated across configurations (they share the items), so rather
than assume it, N_T is estimated by a bootstrap over test items (the same resample for every
configuration): N_T is the mean square of term T computed on the bootstrap deviations. The components are
then solved from the highest term down (method of moments); a negative estimate means "no evidence of
this source beyond noise" and counts as 0 in the shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np

ITEMS = "item sampling"  # the name of the residual component


@dataclass(frozen=True)
class Factor:
    name: str
    levels: int
    within: str | None = None  # nested in this factor: its level index counts within each level of that one


@dataclass(frozen=True)
class Component:
    name: str  # "set", "order" (within set), "set x template" (an interaction), or ITEMS
    term: tuple[str, ...]  # every factor of the term, nesting parents included; () for item sampling
    variance: float  # the method-of-moments estimate (may be negative)
    share: float  # of the sum of the non-negative components and item sampling


@dataclass(frozen=True)
class Decomposition:
    components: list[Component]  # one per term, then item sampling last
    configurations: int
    items: int
    mean: float
    std: float  # over configurations (ddof=1), as papers report "mean ± std over orders"
    minimum: float
    median: float
    maximum: float

    @property
    def spread(self) -> float:
        """Best configuration minus worst."""
        return self.maximum - self.minimum

    def share(self, name: str) -> float:
        return next(component.share for component in self.components if component.name == name)


def grid(scores: np.ndarray, levels: Sequence[Sequence[int]], factors: Sequence[Factor]) -> np.ndarray:
    """Rows of per-configuration values (configurations x ...) into an array with one axis per factor.

    levels[c][f] is configuration c's level of factor f; the design must be complete and balanced."""
    shape = tuple(factor.levels for factor in factors)
    if len(scores) != int(np.prod(shape)):
        raise ValueError(f"{len(scores)} configurations for a balanced design of {'x'.join(map(str, shape))}")
    out = np.full(shape + scores.shape[1:], np.nan)
    seen = set()
    for row, position in zip(scores, levels):
        position = tuple(position)
        if position in seen or any(not 0 <= p < n for p, n in zip(position, shape)):
            raise ValueError(f"configuration at levels {position} repeated or out of range")
        seen.add(position)
        out[position] = row
    return out


def terms(factors: Sequence[Factor]) -> list[tuple[int, ...]]:
    """Every term of the design (axis indices), lowest order first: a nested factor comes with its parent."""
    names = [factor.name for factor in factors]
    parents = {i: names.index(factor.within) for i, factor in enumerate(factors) if factor.within is not None}
    valid = []
    for size in range(1, len(factors) + 1):
        for term in combinations(range(len(factors)), size):
            if all(parents[i] in term for i in term if i in parents):
                valid.append(term)
    return valid


def term_name(term: tuple[int, ...], factors: Sequence[Factor]) -> str:
    """A term by the factors it is about: a parent that is there only because a nested factor needs it is left
    out ("order" for order within set), so "set x template" is an interaction and "order" is not."""
    inside = {factors[axis].within for axis in term}
    return " x ".join(factors[axis].name for axis in term if factors[axis].name not in inside)


def mean_squares(values: np.ndarray, factors: Sequence[Factor]) -> tuple[dict[tuple[int, ...], float], dict]:
    """Each term's mean square and degrees of freedom. values: one axis per factor, then optional trailing axes
    (bootstrap replicates) over which the mean squares are computed separately."""
    count = len(factors)
    axes = tuple(range(count))
    effects: dict[tuple[int, ...], np.ndarray] = {(): values.mean(axis=axes, keepdims=True)}
    freedom: dict[tuple[int, ...], int] = {(): 1}
    squares, result = {}, {}
    for term in terms(factors):
        others = tuple(axis for axis in axes if axis not in term)
        effect = values.mean(axis=others, keepdims=True) if others else values
        contained = [sub for sub in effects if set(sub) < set(term)]
        for sub in contained:
            effect = effect - effects[sub]
        effects[term] = effect
        freedom[term] = int(np.prod([factors[axis].levels for axis in term])) - sum(freedom[sub] for sub in contained)
        replication = int(np.prod([factors[axis].levels for axis in others]))
        squares[term] = (effect ** 2).sum(axis=axes) * replication
        result[term] = squares[term] / freedom[term] if freedom[term] else np.zeros_like(squares[term])
    return result, freedom


def decompose(correct: np.ndarray, levels: Sequence[Sequence[int]], factors: Sequence[Factor],
              bootstrap: int = 1000, seed: int = 0) -> Decomposition:
    """correct: configurations x test items (1 right, 0 wrong; the same items in the same order for every
    configuration); levels: each configuration's level of every factor."""
    correct = np.asarray(correct, dtype=float)
    configurations, items = correct.shape
    accuracy = correct.mean(axis=1)
    observed, _ = mean_squares(grid(accuracy, levels, factors), factors)
    # item bootstrap: the same resampled items for every configuration, as counts per item
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(items, np.full(items, 1 / items), size=bootstrap).T  # items x replicates
    deviations = correct @ counts / items - accuracy[:, None]  # configurations x replicates
    noise_squares, _ = mean_squares(grid(deviations, levels, factors), factors)
    noise = {term: float(np.mean(value)) for term, value in noise_squares.items()}
    item_variance = float(np.mean(np.var(deviations, axis=0, ddof=1))) if configurations > 1 else 0.0

    all_terms = terms(factors)
    sizes = [factor.levels for factor in factors]
    per_cell = {term: int(np.prod([n for axis, n in enumerate(sizes) if axis not in term])) for term in all_terms}
    variance: dict[tuple[int, ...], float] = {}
    for term in sorted(all_terms, key=len, reverse=True):  # from the highest order down
        above = sum(per_cell[other] * variance[other] for other in variance if set(term) < set(other))
        variance[term] = (float(observed[term]) - noise[term] - above) / per_cell[term]
    kept = {term: max(value, 0.0) for term, value in variance.items()}
    total = sum(kept.values()) + item_variance
    components = [Component(term_name(term, factors), tuple(factors[axis].name for axis in term), variance[term],
                            kept[term] / total if total else 0.0) for term in all_terms]
    components.append(Component(ITEMS, (), item_variance, item_variance / total if total else 0.0))
    return Decomposition(components=components, configurations=configurations, items=items,
                         mean=float(accuracy.mean()), std=float(accuracy.std(ddof=1)) if configurations > 1 else 0.0,
                         minimum=float(accuracy.min()),
                         median=float(np.median(accuracy)), maximum=float(accuracy.max()))


@dataclass(frozen=True)
class Verdict:
    """One method against another over every pair of their configurations, on the same test items."""

    wins: float  # share of (configuration of a, configuration of b) pairs where a scores higher (ties: half)
    difference: float  # mean accuracy of a minus mean accuracy of b
    low: float  # 95% interval of the difference: bootstrap over test items and over each study's sources
    high: float


def compare(correct_a: np.ndarray, levels_a: Sequence[Sequence[int]], factors_a: Sequence[Factor],
            correct_b: np.ndarray, levels_b: Sequence[Sequence[int]], factors_b: Sequence[Factor],
            bootstrap: int = 2000, seed: int = 0) -> Verdict:
    """Method a against method b. The interval resamples test items (the same for both: the comparison is
    paired) and, within each method, its configurations as the design drew them (each top-level source's
    levels with replacement, nested ones within each drawn parent), so it holds the variance from which
    demonstrations, orders and seeds happened to be drawn, not only from which test items."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape[1] != b.shape[1]:
        raise ValueError("the two methods were scored on different numbers of test items")
    accuracy_a, accuracy_b = a.mean(axis=1), b.mean(axis=1)
    pairs = accuracy_a[:, None] - accuracy_b[None, :]
    wins = float(np.mean((pairs > 0) + 0.5 * (pairs == 0)))
    rng = np.random.default_rng(seed)
    items = a.shape[1]
    grid_a, grid_b = grid(a, levels_a, factors_a), grid(b, levels_b, factors_b)
    differences = np.empty(bootstrap)
    for replicate in range(bootstrap):
        chosen = rng.integers(0, items, size=items)
        differences[replicate] = (_resampled_mean(grid_a, factors_a, chosen, rng)
                                  - _resampled_mean(grid_b, factors_b, chosen, rng))
    low, high = np.percentile(differences, [2.5, 97.5])
    return Verdict(wins=wins, difference=float(accuracy_a.mean() - accuracy_b.mean()), low=float(low),
                   high=float(high))


def _resampled_mean(values: np.ndarray, factors: Sequence[Factor], items: np.ndarray,
                    rng: np.random.Generator) -> float:
    """The mean accuracy of one bootstrap draw of configurations (by the design) and of test items."""
    names = [factor.name for factor in factors]
    picks: list[np.ndarray] = []
    for factor in factors:
        if factor.within is None:
            picks.append(rng.integers(0, factor.levels, size=factor.levels))
        else:  # a fresh draw of this factor's levels under every drawn level of its parent
            parent = names.index(factor.within)
            picks.append(rng.integers(0, factor.levels, size=(factors[parent].levels, factor.levels)))
    index = np.indices(tuple(factor.levels for factor in factors))
    chosen = []
    for axis, factor in enumerate(factors):
        if factor.within is None:
            chosen.append(picks[axis][index[axis]])
        else:
            parent = names.index(factor.within)
            chosen.append(picks[axis][index[parent], index[axis]])
    cells = values[tuple(chosen)]  # the drawn configurations, each with its items
    return float(cells[..., items].mean())
