"""The variance decomposition of harness/report/variance.py, on data generated with known components."""

from __future__ import annotations

import numpy as np
import pytest

from harness.report.variance import ITEMS, Factor, compare, decompose, grid, mean_squares, terms


def _simulate(rng: np.random.Generator, effects: np.ndarray, items: int, base: float = 0.7) -> np.ndarray:
    """configurations x items correctness: each configuration's true accuracy is base + its effect, each item an
    independent draw (so item sampling adds p(1 - p) / items to each accuracy)."""
    accuracy = np.clip(base + effects.reshape(-1), 0.02, 0.98)
    return (rng.random((accuracy.size, items)) < accuracy[:, None]).astype(float)


def test_nested_decomposition_recovers_set_order_and_item_sampling() -> None:
    """Order nested in demonstration set: sigma_set 0.05, sigma_order 0.03, 2,000 items per configuration.
    Tolerances: about two standard errors of a variance estimated from 60 sets (sqrt(2 / 59) = 18%)."""
    rng = np.random.default_rng(7)
    sets, orders, items = 60, 24, 2000
    effects = rng.normal(0, 0.05, size=(sets, 1)) + rng.normal(0, 0.03, size=(sets, orders))
    correct = _simulate(rng, effects, items)
    levels = [(s, o) for s in range(sets) for o in range(orders)]
    factors = [Factor("set", sets), Factor("order", orders, within="set")]
    result = decompose(correct, levels, factors, bootstrap=300)
    variance = {component.name: component.variance for component in result.components}
    assert variance["set"] == pytest.approx(0.05 ** 2, rel=0.4)
    assert variance["order"] == pytest.approx(0.03 ** 2, rel=0.2)
    expected_noise = np.mean(np.clip(0.7 + effects, 0.02, 0.98) * (1 - np.clip(0.7 + effects, 0.02, 0.98))) / items
    assert variance[ITEMS] == pytest.approx(expected_noise, rel=0.1)
    assert sum(component.share for component in result.components) == pytest.approx(1.0)
    assert result.spread == pytest.approx(correct.mean(1).max() - correct.mean(1).min())
    assert result.std == pytest.approx(correct.mean(1).std(ddof=1))


def test_item_sampling_is_not_mistaken_for_order() -> None:
    """No order effect at all, only item noise: the order component is near 0 and item sampling carries the
    within-set spread (without the bootstrap, the order term would absorb all of it)."""
    rng = np.random.default_rng(3)
    sets, orders, items = 40, 24, 256
    effects = rng.normal(0, 0.06, size=(sets, 1)) + np.zeros((sets, orders))
    correct = _simulate(rng, effects, items)
    levels = [(s, o) for s in range(sets) for o in range(orders)]
    result = decompose(correct, levels, [Factor("set", sets), Factor("order", orders, within="set")], bootstrap=300)
    noise = 0.21 / items
    assert abs(result.components[1].variance) < 0.15 * noise  # order: nothing beyond item sampling
    assert result.components[1].name == "order" and result.components[1].term == ("set", "order")
    assert result.share(ITEMS) > 0.1
    assert result.share("set") > 0.6


def test_crossed_factors_with_interaction() -> None:
    """Template crossed with demonstration set, with an interaction: all three components recovered."""
    rng = np.random.default_rng(11)
    sets, templates, items = 50, 30, 4000
    effects = (rng.normal(0, 0.04, size=(sets, 1)) + rng.normal(0, 0.05, size=(1, templates))
               + rng.normal(0, 0.02, size=(sets, templates)))
    correct = _simulate(rng, effects, items, base=0.6)
    levels = [(s, t) for s in range(sets) for t in range(templates)]
    result = decompose(correct, levels, [Factor("set", sets), Factor("template", templates)], bootstrap=200)
    variance = {component.name: component.variance for component in result.components}
    assert variance["set"] == pytest.approx(0.04 ** 2, rel=0.45)
    assert variance["template"] == pytest.approx(0.05 ** 2, rel=0.55)
    assert variance["set x template"] == pytest.approx(0.02 ** 2, rel=0.3)


def test_terms_keep_nested_factors_with_their_parent() -> None:
    factors = [Factor("set", 2), Factor("order", 3, within="set"), Factor("template", 2)]
    assert terms(factors) == [(0,), (2,), (0, 1), (0, 2), (0, 1, 2)]


def test_mean_squares_match_a_hand_computed_one_way_anova() -> None:
    values = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]])  # 2 groups x 3 replicates as a nested design
    squares, freedom = mean_squares(values, [Factor("group", 2), Factor("rep", 3, within="group")])
    grand = values.mean()
    between = 3 * ((values.mean(1) - grand) ** 2).sum() / 1
    within = ((values - values.mean(1, keepdims=True)) ** 2).sum() / 4
    assert squares[(0,)] == pytest.approx(between) and freedom[(0,)] == 1
    assert squares[(0, 1)] == pytest.approx(within) and freedom[(0, 1)] == 4


def test_grid_refuses_an_unbalanced_design() -> None:
    with pytest.raises(ValueError, match="balanced"):
        grid(np.zeros(5), [(0, 0)] * 5, [Factor("set", 2), Factor("order", 3, within="set")])
    with pytest.raises(ValueError, match="repeated"):
        grid(np.zeros(2), [(0, 0), (0, 0)], [Factor("a", 1), Factor("b", 2)])


def test_verdict_interval_holds_configuration_variance() -> None:
    """Two methods 3 points apart on average, with a large spread between demonstration sets: the interval
    over sets and items is wider than the one over items alone, and covers the true difference."""
    rng = np.random.default_rng(5)
    items = 1000
    icl = rng.normal(0, 0.06, size=(5, 1)) + rng.normal(0, 0.02, size=(5, 24))
    tuned = rng.normal(0, 0.01, size=(5, 3)) + 0.03
    correct_icl, correct_tuned = _simulate(rng, icl, items), _simulate(rng, tuned, items)
    icl_levels = [(s, o) for s in range(5) for o in range(24)]
    tuned_levels = [(s, t) for s in range(5) for t in range(3)]
    verdict = compare(correct_tuned, tuned_levels, [Factor("set", 5), Factor("seed", 3)],
                      correct_icl, icl_levels, [Factor("set", 5), Factor("order", 24, within="set")], bootstrap=500)
    assert verdict.low < verdict.difference < verdict.high
    assert verdict.difference == pytest.approx(correct_tuned.mean() - correct_icl.mean())
    # items alone: the standard error of a paired difference of two accuracies over 1,000 items is under 2 points
    assert verdict.high - verdict.low > 2 * 1.96 * 0.02
    pairs = correct_tuned.mean(1)[:, None] - correct_icl.mean(1)[None, :]
    assert verdict.wins == pytest.approx(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0))
