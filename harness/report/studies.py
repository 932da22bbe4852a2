"""Sensitivity studies in the report: per condition, the variance of accuracy by source, the spread of orders
per demonstration set, and fine-tuning against ICL with an interval that includes configuration variance.

A study record (harness/runs/study.py) names the run of each configuration; the runs' predictions give each
configuration's correctness on every test item, which harness/report/variance.py decomposes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as PlotFigure

from harness.errors import HarnessError
from harness.finetune.method import in_context
from harness.kinds.calibration import calibrated as was_calibrated
from harness.report.render import Figure, Section
from harness.report.variance import ITEMS, Decomposition, Factor, Verdict, compare, decompose
from harness.runs.records import RecordError, read_predictions, read_run
from harness.runs.study import PHRASES, Condition, Study

BOOTSTRAP = 1000  # item resamples for the item-sampling component
VERDICT_BOOTSTRAP = 2000


@dataclass(frozen=True)
class ConditionResult:
    condition: Condition
    factors: list[Factor]
    correct: np.ndarray  # configurations x test items, in the condition's cell order
    decomposition: Decomposition

    @property
    def accuracies(self) -> np.ndarray:
        return self.correct.mean(axis=1)


@dataclass(frozen=True)
class StudyResult:
    study: Study
    conditions: list[ConditionResult]
    verdicts: list[tuple[str, str, Verdict]]  # (fine-tuning condition, ICL condition, fine-tuning - ICL)


def analyse(study: Study) -> StudyResult:
    """Every condition decomposed, and each fine-tuning condition against each ICL condition."""
    results = []
    items: list[str] | None = None
    for condition in study.conditions:
        factors = [Factor(spec.name, len(spec.levels), spec.within) for spec in condition.factors]
        rows = []
        for cell in condition.cells:
            ids, right = _correctness(Path(cell.run_dir), cell.calibrated)
            if items is None:
                items = ids
            elif ids != items:
                raise HarnessError(f"study {study.name}: {cell.run_dir} scored other test items than the study's "
                                   "first run; a study compares configurations on the same items")
            rows.append(right)
        correct = np.array(rows, dtype=float)
        decomposition = decompose(correct, [cell.levels for cell in condition.cells], factors, bootstrap=BOOTSTRAP)
        results.append(ConditionResult(condition, factors, correct, decomposition))
    verdicts = [(tuned.condition.name, icl.condition.name,
                 compare(tuned.correct, [c.levels for c in tuned.condition.cells], tuned.factors,
                         icl.correct, [c.levels for c in icl.condition.cells], icl.factors,
                         bootstrap=VERDICT_BOOTSTRAP))
                for tuned in results if not in_context(tuned.condition.method)
                for icl in results if in_context(icl.condition.method)]
    return StudyResult(study, results, verdicts)


def _correctness(run_dir: Path, calibrated: bool) -> tuple[list[str], list[bool]]:
    """Item ids and whether each was right: the run's prediction, or (calibrated=False on a calibrated run) the
    label its scores ranked first before calibration (the first of equal scores, as the scorer breaks ties)."""
    try:
        record = read_run(run_dir)
        rows = read_predictions(run_dir, record)
    except RecordError as error:
        raise HarnessError(f"the study's run {run_dir} cannot be read ({error}; the same `sensitivity` command "
                           "scores it again)") from None
    if calibrated or not was_calibrated(record.calibration):
        return [str(r["id"]) for r in rows], [r["prediction"] == r["gold"] for r in rows]
    return [str(r["id"]) for r in rows], [max(r["scores"], key=r["scores"].get) == r["gold"] for r in rows]


def _phrase(name: str, method: str) -> str:
    if name == ITEMS:
        return "the sampling of test items"
    parts = [PHRASES[part] if not (part == "set" and not in_context(method)) else "which training examples are drawn"
             for part in name.split(" x ")]
    return parts[0] if len(parts) == 1 else "the interaction of " + " and ".join(parts)


def headline(study: Study, result: ConditionResult) -> str:
    """"72% of the variance of 4-shot icl on sst2 comes from the order of the demonstrations" and the rest."""
    d = result.decomposition
    if not any(c.share for c in d.components):
        return (f"the {d.configurations} configurations of {study.shots}-shot {result.condition.name} on {study.task} "
                f"({study.model}) were right on the same items (accuracy {d.mean:.3f}): no variance to attribute")
    components = sorted(d.components, key=lambda c: c.share, reverse=True)
    top, rest = components[0], [c for c in components[1:] if c.share >= 0.005]
    others = "; " + ", ".join(f"{c.share:.0%} {_phrase(c.name, result.condition.method)}" for c in rest) if rest else ""
    return (f"{top.share:.0%} of the variance of {study.shots}-shot {result.condition.name} on {study.task} "
            f"({study.model}) comes from {_phrase(top.name, result.condition.method)}{others}")


def summary_text(result: StudyResult) -> str:
    lines = [f"study {result.study.name}:"]
    for condition in result.conditions:
        d = condition.decomposition
        lines.append(f"  {condition.condition.name}: {d.configurations} configurations on {d.items} items, accuracy "
                     f"mean {d.mean:.3f} ± {d.std:.3f} (sd), min {d.minimum:.3f}, median {d.median:.3f}, max {d.maximum:.3f} "
                     f"(spread {d.spread:.3f})")
        lines.append("    " + headline(result.study, condition))
        lines.append("    standard deviation by source: " + ", ".join(
            f"{c.name} {math.sqrt(max(c.variance, 0.0)):.3f}" for c in d.components))
    for tuned, icl, verdict in result.verdicts:
        lines.append(f"  {tuned} - {icl}: {verdict.difference:+.3f} [{verdict.low:+.3f}, {verdict.high:+.3f}] "
                     f"(95%, items and configurations resampled); {tuned} better in {verdict.wins:.0%} of pairs")
    return "\n".join(lines)


STUDY_EXPLANATION = (
    "Each row decomposes the variance of accuracy across the study's configurations (every combination of the "
    "levels of its sources) into a share per source and interaction (balanced random-effects ANOVA, method of "
    "moments; a nested source such as order counts within its demonstration set) and the share item sampling "
    "alone would produce (a bootstrap over the test items, {bootstrap} resamples, the same for every "
    "configuration). Negative estimates count as 0. Spread: best configuration minus worst. {headlines}"
)
CALIBRATION_EXPLANATION = (
    "The same runs' scores before and after contextual calibration (Zhao et al. 2021): per source, its standard "
    "deviation of accuracy (the square root of its variance component, 0 where the estimate is negative) "
    "without and with calibration, and the share of its variance calibration removes (negative: it adds)."
)
ORDER_EXPLANATION = (
    "Per demonstration set (run seed): accuracy over its orders, as Lu et al. (2022) report per set."
)
VERDICT_EXPLANATION = (
    "Fine-tuning minus ICL in mean accuracy over each condition's configurations, with a 95% interval from "
    "{bootstrap} resamples of the test items (the same for both: paired) and of each condition's configurations "
    "as its design drew them (sets, then orders within them; seeds), so the interval holds configuration "
    "variance too. Pairs won: the share of (fine-tuning configuration, ICL configuration) pairs where fine-tuning "
    "scores higher (ties count half)."
)


def sections(results: list[StudyResult]) -> list[Section]:
    parts = []
    for result in results:
        study = result.study
        names = dict.fromkeys(c.name for r in result.conditions for c in r.decomposition.components)
        sources = [name for name in names if name != ITEMS] + [ITEMS]  # in the order of the designs
        rows = []
        for condition in result.conditions:
            d = condition.decomposition
            shares = {c.name: f"{c.share:.0%}" for c in d.components}
            rows.append({"condition": condition.condition.name, "configurations": str(d.configurations),
                         "items": str(d.items), "mean ± sd": f"{d.mean:.3f} ± {d.std:.3f}", "min": f"{d.minimum:.3f}",
                         "median": f"{d.median:.3f}", "max": f"{d.maximum:.3f}", "spread": f"{d.spread:.3f}",
                         **{f"{name} share": shares.get(name, "-") for name in sources}})
        headlines = " ".join(headline(study, condition) + "." for condition in result.conditions)
        parts.append(Section(f"Sensitivity: {study.name} ({study.task}, {study.model}, {study.shots} shots)",
                             STUDY_EXPLANATION.format(bootstrap=BOOTSTRAP, headlines=headlines),
                             pd.DataFrame(rows), 1))
        removed = _calibration_rows(result)
        if removed:
            parts.append(Section(f"What calibration removes: {study.name}", CALIBRATION_EXPLANATION,
                                 pd.DataFrame(removed), 2))
        order_rows = _order_rows(result)
        if order_rows:
            parts.append(Section(f"Order spread per demonstration set: {study.name}", ORDER_EXPLANATION,
                                 pd.DataFrame(order_rows), 2))
        if result.verdicts:
            parts.append(Section(f"Fine-tuning vs ICL across configurations: {study.name}",
                                 VERDICT_EXPLANATION.format(bootstrap=VERDICT_BOOTSTRAP), pd.DataFrame([
                                     {"fine-tuning": tuned, "ICL": icl, "FT - ICL": f"{v.difference:+.3f}",
                                      "95% interval": f"[{v.low:+.3f}, {v.high:+.3f}]", "pairs won": f"{v.wins:.0%}"}
                                     for tuned, icl, v in result.verdicts]), 2))
    return parts


def _calibration_rows(result: StudyResult) -> list[dict[str, str]]:
    """Per source, its standard deviation without and with contextual calibration (the same runs' scores)."""
    by_name = {condition.condition.name: condition for condition in result.conditions}
    rows = []
    for name, plain in by_name.items():
        calibrated = by_name.get(f"{name}, contextual calibration")
        if calibrated is None:
            continue
        after = {c.name: c.variance for c in calibrated.decomposition.components}
        for component in plain.decomposition.components:
            before, later = max(component.variance, 0.0), max(after[component.name], 0.0)
            rows.append({"condition": name, "source": component.name, "sd without": f"{math.sqrt(before):.3f}",
                         "sd with": f"{math.sqrt(later):.3f}",
                         "variance removed": f"{1 - later / before:.0%}" if before else "adds" if later else "-"})
    return rows


def _order_rows(result: StudyResult) -> list[dict[str, str]]:
    rows = []
    for condition in result.conditions:
        names = [f.name for f in condition.factors]
        if "order" not in names or "set" not in names or len(names) != 2:
            continue
        set_spec = condition.condition.factors[names.index("set")]
        by_set = _by_set(condition)
        for index, values in by_set.items():
            rows.append({"condition": condition.condition.name, "set (seed)": set_spec.levels[index],
                         "orders": str(len(values)), "min": f"{min(values):.3f}",
                         "median": f"{float(np.median(values)):.3f}", "max": f"{max(values):.3f}",
                         "spread": f"{max(values) - min(values):.3f}"})
    return rows


def _by_set(condition: ConditionResult) -> dict[int, list[float]]:
    set_axis = [f.name for f in condition.factors].index("set")
    by_set: dict[int, list[float]] = {}
    for cell, accuracy in zip(condition.condition.cells, condition.accuracies):
        by_set.setdefault(cell.levels[set_axis], []).append(float(accuracy))
    return dict(sorted(by_set.items()))


def figures(results: list[StudyResult]) -> list[Figure]:
    out = []
    for result in results:
        name = result.study.name
        out.append(Figure(f"Share of the variance of accuracy by source: {name}", _shares_plot(result)))
        out.append(Figure(f"Accuracy of every configuration, coloured by demonstration (training) set: {name}",
                          _strip_plot(result)))
        for condition in result.conditions:
            names = [f.name for f in condition.factors]
            if names == ["set", "order"]:
                out.append(Figure(f"Accuracy by demonstration set and order: {condition.condition.name}, {name}",
                                  _heat_map(condition)))
    return out


def _shares_plot(result: StudyResult) -> bytes:
    names = [name for name in dict.fromkeys(c.name for r in result.conditions for c in r.decomposition.components)
             if name != ITEMS] + [ITEMS]  # item sampling on top of every bar
    figure = PlotFigure(figsize=(1.6 + 1.3 * len(result.conditions), 3.6), layout="constrained")
    ax = figure.subplots()
    bottom = np.zeros(len(result.conditions))
    for name in names:
        shares = np.array([next((c.share for c in r.decomposition.components if c.name == name), 0.0)
                           for r in result.conditions])
        ax.bar(range(len(result.conditions)), shares, bottom=bottom, label=name,
               color="lightgrey" if name == ITEMS else None)
        bottom += shares
    ax.set_xticks(range(len(result.conditions)), [r.condition.name for r in result.conditions], rotation=20,
                  ha="right")
    ax.set(ylabel="share of variance", ylim=(0, 1))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    return _png(figure)


def _strip_plot(result: StudyResult) -> bytes:
    figure = PlotFigure(figsize=(2.8 + 1.3 * len(result.conditions), 3.6), layout="constrained")
    ax = figure.subplots()
    rng = np.random.default_rng(0)  # horizontal jitter only
    labelled = set()
    for position, condition in enumerate(result.conditions):
        names = [f.name for f in condition.factors]
        colour_axis = names.index("set") if "set" in names else 0
        spec = condition.condition.factors[colour_axis]
        levels = np.array([cell.levels[colour_axis] for cell in condition.condition.cells])
        for level in np.unique(levels):
            chosen = levels == level
            label = f"{spec.name} {spec.levels[level]}"
            ax.scatter(position + rng.uniform(-0.25, 0.25, int(chosen.sum())), condition.accuracies[chosen],
                       color=f"C{level % 10}", s=12, label=None if label in labelled else label)
            labelled.add(label)
    ax.set_xticks(range(len(result.conditions)), [r.condition.name for r in result.conditions], rotation=20,
                  ha="right")
    ax.set(ylabel="accuracy")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    return _png(figure)


def _heat_map(condition: ConditionResult) -> bytes:
    sets, orders = (f.levels for f in condition.factors)
    values = np.full((sets, orders), np.nan)
    for cell, accuracy in zip(condition.condition.cells, condition.accuracies):
        values[cell.levels[0], cell.levels[1]] = accuracy
    specs = condition.condition.factors
    figure = PlotFigure(figsize=(max(4.0, 0.32 * orders + 1.8), 0.45 * sets + 1.6), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_yticks(range(sets), [f"seed {level}" for level in specs[0].levels])
    ax.set_xticks(range(orders), [level.strip("[]").replace(",", "") for level in specs[1].levels], rotation=90,
                  fontsize="x-small")
    ax.set(xlabel="order (position i shows drawn example order[i])", ylabel="demonstration set")
    figure.colorbar(image, ax=ax, label="accuracy")
    return _png(figure)


def _png(figure: PlotFigure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
