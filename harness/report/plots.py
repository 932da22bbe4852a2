"""The report's plots, drawn with matplotlib's object API (no pyplot: no GUI backend, no global state)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.metrics.registry import title
from harness.report.board import ModelBoard

PANEL_COLUMNS = 3
PANEL_SIZE = (4.6, 3.4)  # inches


def metric_vs_shots(summary: pd.DataFrame, group: list[str], metric: str) -> bytes | None:
    """Mean metric against k: a panel per task and model, a line per method (and any other key that
    varies), the band one standard deviation over seeds either side."""
    if "shots" not in group or summary.empty:
        return None
    panel_keys = [k for k in ("task", "model") if k in group]
    line_keys = [k for k in group if k not in (*panel_keys, "shots") and summary[k].nunique(dropna=False) > 1]
    panels = list(summary.groupby(panel_keys, sort=False, dropna=False)) if panel_keys else [((), summary)]
    figure, axes = _grid(len(panels))
    for ax, (keys, frame) in zip(axes, panels):
        for label, line in _lines(frame, line_keys):
            line = line.sort_values("shots")
            mean, std = line[f"{metric}_mean"].to_numpy(float), line[f"{metric}_std"].fillna(0).to_numpy(float)
            ax.plot(line["shots"], mean, marker="o", label=label or title(metric))
            ax.fill_between(line["shots"], mean - std, mean + std, alpha=0.2)
        ax.set(title=" · ".join(map(str, keys)), xlabel="k (shots)", ylabel=title(metric))
        ax.set_xticks(sorted(frame["shots"].unique()))
        ax.legend(fontsize="small")
    return _png(figure)


def finetuning_vs_icl(comparison: pd.DataFrame, group: list[str], metric: str) -> bytes | None:
    """Fine-tuning minus ICL against k: a panel per task, a line per model and method (and any other
    key that varies), bars for the 95% paired-bootstrap interval; above zero, fine-tuning wins."""
    if comparison.empty:
        return None
    panel_keys = ["task"] if "task" in group else []
    line_keys = [k for k in group if k not in (*panel_keys, "shots") and comparison[k].nunique(dropna=False) > 1]
    line_keys = line_keys or ["method"]
    panels = list(comparison.groupby(panel_keys, sort=False)) if panel_keys else [((), comparison)]
    figure, axes = _grid(len(panels))
    for ax, (keys, frame) in zip(axes, panels):
        lines = _lines(frame, line_keys)
        for position, (label, line) in enumerate(lines):
            line = line.sort_values("shots") if "shots" in group else line
            x = line["shots"] if "shots" in group else [position]
            difference = line["difference"].to_numpy(float)
            below = np.nan_to_num(difference - line["ci_low"].to_numpy(float))  # no interval without predictions
            above = np.nan_to_num(line["ci_high"].to_numpy(float) - difference)
            ax.errorbar(x, difference, yerr=[below, above], marker="o", capsize=3, label=label)
        ax.axhline(0, color="grey", linewidth=0.8)
        if "shots" in group:
            ax.set_xticks(sorted(frame["shots"].unique()))
            ax.legend(fontsize="small")
        else:
            ax.set_xticks(range(len(lines)), [label for label, _ in lines], rotation=20, ha="right")
        ax.set(title=" · ".join(map(str, keys)) or "all tasks", xlabel="k (shots)" if "shots" in group else "",
               ylabel=f"{title(metric)}: fine-tuning - ICL")
    return _png(figure)


def score_vs_cost(boards: list[ModelBoard]) -> bytes | None:
    """Each model's average over the leaderboard's tasks against the wall time its runs took (log scale): a
    marker per k, a label per model. Up and to the left is better."""
    points = [(board.shots, row) for board in boards for row in board.table.itertuples(index=False)
              if not math.isnan(row.average)]
    if not points:
        return None
    figure = Figure(figsize=PANEL_SIZE, layout="constrained")
    ax = figure.subplots()
    for marker, board in zip("osD^v<>p*", boards):
        rows = board.table[board.table["average"].notna()]
        if rows.empty:
            continue
        ax.scatter(rows["wall_time_s"], rows["average"], marker=marker, label=f"{board.shots}-shot")
        for model, x, y in zip(rows["model"], rows["wall_time_s"], rows["average"]):
            ax.annotate(str(model), (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xscale("log")
    ax.set(xlabel="wall time of the model's runs (s, log scale)", ylabel="average over the tasks",
           title="score against cost")
    ax.legend(fontsize="small")
    return _png(figure)


def _lines(frame: pd.DataFrame, keys: list[str]) -> list[tuple[str, pd.DataFrame]]:
    if not keys:
        return [("", frame)]
    return [(" ".join(map(str, values)), line) for values, line in frame.groupby(keys, sort=False, dropna=False)]


def _grid(panels: int) -> tuple[Figure, list]:
    columns = min(panels, PANEL_COLUMNS)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return figure, list(axes)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
