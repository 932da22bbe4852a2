"""The leaderboard across models: at each k, one row per model, one column per task.

Per task, a model's main metric (the one its task group names, as acc_norm for HellaSwag; else the report's
metric) as the mean over its ICL runs at that k (seeds, templates), ± the standard error over test items (the
mean of the runs'), and its rank; then the average over the tasks (each task once, as lm-evaluation-harness's
unweighted group averages), HELM's mean win rate, what the model cost (wall time and tokens forwarded summed
over the tasks, the peak memory of the largest run) and, where fine-tuning runs exist, the best method's
average at the same k beside ICL's.

Ranks only separate what the test set separates: each pair of models is compared by a paired bootstrap on
the items both scored (for the average, every task's items resampled at once), and a model's rank is 1 + the
number of models better than it with a 95% interval above zero; models no test tells apart share a rank.
A pair that cannot be paired (no per-item predictions, as an imported result without samples) is ordered by
its scores alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from harness.finetune.method import in_context
from harness.inputs.registry import TaskGroup
from harness.kinds.calibration import calibrated
from harness.metrics.registry import leaderboard_metric
from harness.report.load import metric_columns
from harness.report.stats import (
    ABSENT,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_differences,
    separable_ranks,
    win_rates,
)
from harness.report.tables import paired_items

PredictionsByMetric = Callable[[str, str], "pd.DataFrame | None"]  # run directory, metric -> id, gold, prediction


@dataclass(frozen=True)
class ModelBoard:
    shots: int
    metrics: dict[str, str]  # task -> its main metric, in column order
    table: pd.DataFrame  # one row per model, best first (columns: see _board)


def main_metrics(runs: pd.DataFrame, task_groups: Sequence[TaskGroup], metric: str) -> dict[str, str]:
    """Each task's main metric: what a task group names for it, else `metric`, else the first it recorded."""
    named: dict[str, str] = {}
    for group in task_groups:
        for task, name in group.metrics.items():
            named.setdefault(task, name)
    chosen = {}
    for task, frame in runs.groupby("task", sort=True):
        recorded = [name for name in metric_columns(frame) if leaderboard_metric(name) and frame[name].notna().any()]
        if recorded:
            chosen[task] = next(name for name in (named.get(task), metric, *recorded) if name in recorded)
    return chosen


def model_boards(runs: pd.DataFrame, task_groups: Sequence[TaskGroup], metric: str, predictions: PredictionsByMetric,
                 resamples: int = BOOTSTRAP_RESAMPLES) -> list[ModelBoard]:
    """A board for each k at which ICL runs of two or more models exist (plain rank scoring, uncalibrated: the
    protocol of published leaderboards; the other runs are in the report's other tables)."""
    plain = runs[(runs["scorer"] == "rank") & ~runs["calibration"].map(calibrated)]
    metrics = main_metrics(plain, task_groups, metric)
    boards = []
    for shots, at_k in plain.groupby("shots", sort=True):
        icl = at_k[at_k["method"].map(in_context)]
        if icl["model"].nunique() < 2:
            continue
        tasks = {task: name for task, name in metrics.items() if task in set(icl["task"])}
        table = _board(icl, at_k[~at_k["method"].map(in_context)], tasks, predictions, resamples)
        boards.append(ModelBoard(int(shots), tasks, table))
    return boards


def _board(icl: pd.DataFrame, finetuned: pd.DataFrame, metrics: dict[str, str], predictions: PredictionsByMetric,
           resamples: int) -> pd.DataFrame:
    models = sorted(icl["model"].unique())
    tasks = list(metrics)
    score = pd.DataFrame(np.nan, index=models, columns=tasks)
    error = score.copy()
    for (model, task), frame in icl.groupby(["model", "task"]):
        if task in metrics:
            score.loc[model, task] = frame[metrics[task]].mean()
            error.loc[model, task] = frame[f"{metrics[task]}_se"].mean()
    complete = score.notna().all(axis=1)
    average = score.mean(axis=1).where(complete)
    task_better, average_better = _separations(icl, models, metrics, score, average, predictions, resamples)
    table = pd.DataFrame({"model": models, "average": average.to_numpy()})
    table["mean_win_rate"] = pd.concat([win_rates(score[task].dropna()) for task in tasks], axis=1).mean(
        axis=1).reindex(models).to_numpy()
    for task in tasks:
        table[task], table[f"{task} se"] = score[task].to_numpy(), error[task].to_numpy()
        scored = score[task].notna().to_numpy()
        ranks = np.full(len(models), np.nan)
        ranks[scored] = separable_ranks(task_better[task][np.ix_(scored, scored)])
        table[f"{task} rank"] = ranks
    # NaN, not 0, where nothing was measured (an imported lm-evaluation-harness file times all its tasks at once)
    per_task = icl.groupby(["model", "task"])[["wall_time_s", "tokens_forwarded"]].mean().groupby("model").sum(
        min_count=1)
    table["wall_time_s"] = per_task["wall_time_s"].reindex(models).to_numpy()
    table["tokens_forwarded"] = per_task["tokens_forwarded"].reindex(models).to_numpy()
    table["peak_memory_mb"] = icl.groupby("model")["peak_memory_mb"].max().reindex(models).to_numpy()
    if not finetuned.empty:
        best = _best_finetuning(finetuned, metrics, score)
        table["best_finetuning"] = [best.get(model, (np.nan, ""))[0] for model in models]
        table["best_finetuning_method"] = [best.get(model, (np.nan, ""))[1] for model in models]
    ranked = complete.to_numpy()
    ranks = np.full(len(models), np.nan)
    ranks[ranked] = separable_ranks(average_better[np.ix_(ranked, ranked)])
    table.insert(0, "rank", ranks)
    return table.sort_values(["rank", "average", "mean_win_rate"], ascending=[True, False, False],
                             na_position="last", kind="stable").reset_index(drop=True)


def _separations(icl: pd.DataFrame, models: list[str], metrics: dict[str, str], score: pd.DataFrame,
                 average: pd.Series, predictions: PredictionsByMetric,
                 resamples: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """better[i, j]: model j is better than model i, per task and on the average (see the module's docstring)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    size = len(models)
    task_better = {task: np.zeros((size, size), dtype=bool) for task in metrics}
    average_better = np.zeros((size, size), dtype=bool)
    for i, j in combinations(range(size), 2):
        draws_per_task = []
        for task, metric in metrics.items():
            if np.isnan(score.iloc[i][task]) or np.isnan(score.iloc[j][task]):
                continue
            arrays = _pairs(icl, models[i], models[j], task, metric, predictions)
            if arrays is None:  # nothing to pair: the scores alone
                task_better[task][i, j], task_better[task][j, i] = (score.iloc[j][task] > score.iloc[i][task],
                                                                    score.iloc[i][task] > score.iloc[j][task])
                continue
            _, draws = bootstrap_differences(metric, *arrays, rng, resamples)  # model j minus model i
            low, high = np.nanpercentile(draws, [2.5, 97.5])
            task_better[task][i, j], task_better[task][j, i] = low > 0, high < 0
            draws_per_task.append(draws)
        if np.isnan(average.iloc[i]) or np.isnan(average.iloc[j]):
            continue
        if len(draws_per_task) == len(metrics):
            low, high = np.nanpercentile(np.mean(draws_per_task, axis=0), [2.5, 97.5])
            average_better[i, j], average_better[j, i] = low > 0, high < 0
        else:
            average_better[i, j], average_better[j, i] = average.iloc[j] > average.iloc[i], average.iloc[i] > average.iloc[j]
    return task_better, average_better


def _pairs(icl: pd.DataFrame, first: str, second: str, task: str, metric: str,
           predictions: PredictionsByMetric) -> tuple[np.ndarray, ...] | None:
    """gold, first's and second's predictions on the items both scored, one row per pair of runs with the same
    template and seed; None when no run pairs up, one has no per-item predictions, or they share no item (an
    lm-evaluation-harness file numbers its items, the harness names them)."""
    runs = icl[icl["task"] == task]
    pairs = runs[runs["model"] == second].merge(runs[runs["model"] == first], on=["template", "seed"],
                                                suffixes=("", "_icl"))
    if pairs.empty:
        return None
    arrays = paired_items(pairs, lambda run_dir: predictions(run_dir, metric))
    shared = arrays is not None and bool((arrays[0] != ABSENT).any())  # none when the runs name items differently
    return arrays if shared else None


def _best_finetuning(finetuned: pd.DataFrame, metrics: dict[str, str],
                     icl_score: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """Per model, the fine-tuning method with the best average over the tasks the model's ICL row has (a method
    must have run them all), and that average."""
    best: dict[str, tuple[float, str]] = {}
    for (model, method), frame in finetuned.groupby(["model", "method"]):
        if model not in icl_score.index:
            continue
        tasks = [task for task in metrics if not np.isnan(icl_score.loc[model, task])]
        values = [frame.loc[frame["task"] == task, metrics[task]].mean() for task in tasks]
        if tasks and not np.isnan(values).any():
            value = float(np.mean(values))
            if model not in best or value > best[model][0]:
                best[model] = (value, str(method))
    return best
