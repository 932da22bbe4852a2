"""The report's three tables, as raw numbers (what the CSV files hold); render.py formats them.

- summary: per group (by default task x model x method x template x scorer x calibration x shots),
  the spread of each metric over the group's runs (seeds, and templates etc. when left out of the group);
- comparison: each fine-tuning method against ICL at equal k, paired on the same test items;
- leaderboard: entries (the group's keys but task) ranked per task and by HELM's mean win rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from harness.finetune.method import in_context
from harness.inputs.registry import TaskGroup
from harness.metrics.functions import NO_LABEL
from harness.metrics.registry import choosable, higher_is_better
from harness.report.load import ABSENT_SETTING, IDENTITY, metric_columns
from harness.report.stats import ABSENT, break_even_queries, discordant_counts, mcnemar, paired_bootstrap, win_rates


def metrics_to_choose(runs: pd.DataFrame) -> list[str]:
    """What `report metric=` may name here (the task's own metrics the runs recorded), in the registry's order: the
    first is the report's default (accuracy, or a multiple-choice task's acc, ...)."""
    return [name for name in metric_columns(runs) if choosable(name) and runs[name].notna().any()]


DEFAULT_GROUP = ("task", "model", "method", "template", "scorer", "calibration", "shots")
ALWAYS_GROUPED = ("scorer", "calibration")  # calibrated and uncalibrated runs are never averaged together
Predictions = Callable[[str], "pd.DataFrame | None"]  # run directory -> id, gold, prediction per item


def differing_settings(runs: pd.DataFrame, settings: pd.DataFrame) -> list[str]:
    """config keys whose value differs between runs that agree on every identity column but the seed.

    Such runs (demos=random and balanced, two method.steps, ...) are different experiments, not
    repetitions: the report groups by these keys too, so they are never averaged together. A key that
    older records lack does not count as a difference by itself: a setting added to the harness
    since keeps the old behaviour by default.
    """
    same_experiment = runs[[key for key in IDENTITY if key != "seed"]].astype(str).agg("|".join, axis=1)
    present = settings.where(settings != ABSENT_SETTING)  # NaN: not counted by nunique
    return [key for key in present.columns if present[key].groupby(same_experiment).nunique().gt(1).any()]


def grouping(requested: list[str] | None, differing: list[str]) -> list[str]:
    group = list(requested or DEFAULT_GROUP)
    return group + [key for key in (*ALWAYS_GROUPED, *differing) if key not in group]


def summary(runs: pd.DataFrame, group: list[str], metric: str) -> pd.DataFrame:
    metrics = [metric] + [m for m in metric_columns(runs) if m != metric and runs[m].notna().any()]
    rows = []
    for keys, frame in runs.groupby(group, sort=False, dropna=False):
        row = dict(zip(group, keys))
        row.update(runs=len(frame), seeds=frame["seed"].nunique(), items=_span(frame["n"]))
        for name in metrics:
            values = frame[name].dropna()
            q1, q3 = values.quantile([0.25, 0.75]) if len(values) else (np.nan, np.nan)  # linear interpolation
            row.update({f"{name}_mean": values.mean(), f"{name}_std": values.std(ddof=1),
                        f"{name}_median": values.median(), f"{name}_q1": q1, f"{name}_q3": q3,
                        f"{name}_iqr": q3 - q1})
        row.update(train_time_s=frame["train_time_s"].mean(),
                   inference_tokens_per_example=frame["inference_tokens_per_example"].mean())
        rows.append(row)
    return _sorted(pd.DataFrame(rows), group)


def comparison(runs: pd.DataFrame, settings: pd.DataFrame, group: list[str], metric: str,
               predictions: Predictions) -> pd.DataFrame:
    """Each fine-tuned run paired with the ICL run of the same task, model, template, shots and seed that
    shares every setting but the method's own (method.*, eval_shots), pooled over the pairs in each group
    (where method is the fine-tuning method)."""
    shared = [f"config.{k}" for k in settings.columns
              if not _method_side(k) and (settings[k] != ABSENT_SETTING).all()]  # demos, subsample, task.*, ...
    runs = runs.join(settings.add_prefix("config.")[shared])
    pair_keys = [k for k in IDENTITY if k != "method"] + shared
    icl = runs[runs["method"].map(in_context)].drop_duplicates(pair_keys)
    pairs = runs[~runs["method"].map(in_context)].merge(icl, on=pair_keys, suffixes=("", "_icl"))
    rows = []
    for keys, frame in pairs.groupby(group, sort=False, dropna=False):
        arrays = paired_items(frame, predictions)
        row = dict(zip(group, keys))
        row.update(pairs=len(frame), seeds=frame["seed"].nunique(), items=np.nan,
                   icl=frame[f"{metric}_icl"].mean(), finetuned=frame[metric].mean())
        row.update(difference=row["finetuned"] - row["icl"], ci_low=np.nan, ci_high=np.nan, icl_only=np.nan,
                   finetuned_only=np.nan, mcnemar_statistic=np.nan, mcnemar_p=np.nan, mcnemar_test=None)
        if arrays is not None:
            gold, icl_predicted, finetuned_predicted = arrays
            row["difference"], row["ci_low"], row["ci_high"] = paired_bootstrap(
                metric, gold, icl_predicted, finetuned_predicted)
            test = mcnemar(*discordant_counts(gold, icl_predicted, finetuned_predicted))
            row.update(items=int((gold != ABSENT).sum()), icl_only=test.icl_only, finetuned_only=test.finetuned_only,
                       mcnemar_statistic=test.statistic, mcnemar_p=test.p_value,
                       mcnemar_test="exact" if test.exact else "chi2")
        icl_tokens = frame["inference_tokens_per_example_icl"].mean()
        tokens = frame["inference_tokens_per_example"].mean()
        row.update(train_time_s=frame["train_time_s"].mean(), icl_tokens_per_example=icl_tokens,
                   tokens_per_example=tokens,
                   break_even_queries=break_even_queries(frame["train_flops"].mean(), frame["total_parameters"].mean(),
                                                         icl_tokens, tokens))
        rows.append(row)
    return _sorted(pd.DataFrame(rows), group) if rows else pd.DataFrame(columns=group)


def leaderboard(summary_table: pd.DataFrame, group: list[str], metric: str,
                task_groups: Sequence[TaskGroup] = ()) -> pd.DataFrame:
    """HELM's mean win rate: per task, an entry's share of the other entries with a worse mean metric
    (lower, or higher for a perplexity; ties count half), averaged over the tasks the entry was run on. Per-task ranks: 1 = best mean
    metric, tied entries share the best rank. Without task in the group, all rows are one task.

    For each task group whose every task an entry ran, "<group> average": the mean over its tasks of the
    metric the group names for each (acc_norm for HellaSwag, ...), each task counting once, as
    lm-evaluation-harness's group averages without size weighting."""
    entry_keys = [k for k in group if k != "task"]
    scores = summary_table.assign(task=summary_table["task"] if "task" in group else "all")
    scores = scores[scores[f"{metric}_mean"].notna()]
    scores = scores.assign(entry=scores[entry_keys].astype(str).agg("|".join, axis=1))
    long = []
    for _, frame in scores.groupby("task", sort=True):
        means = frame[f"{metric}_mean"]
        better = means if higher_is_better(metric) else -means  # a lower perplexity wins
        long.append(frame.assign(rank=better.rank(ascending=False, method="min"), win_rate=win_rates(better)))
    if not long:
        return pd.DataFrame(columns=["rank", *entry_keys, "tasks", "mean_win_rate"])
    averages = _group_averages(summary_table, entry_keys, task_groups) if "task" in group else {}
    rows = []
    for entry, frame in pd.concat(long).groupby("entry", sort=False):
        row = frame.iloc[0][entry_keys].to_dict()
        row.update(tasks=len(frame), mean_win_rate=frame["win_rate"].mean(), **averages.get(entry, {}))
        for task, score, rank in zip(frame["task"], frame[f"{metric}_mean"], frame["rank"]):
            row.update({f"{task} {metric}": score, f"{task} rank": int(rank)})
        rows.append(row)
    table = pd.DataFrame(rows)
    table.insert(0, "rank", table["mean_win_rate"].rank(ascending=False, method="min"))
    return table.sort_values("rank", na_position="last", kind="stable").reset_index(drop=True)


def _group_averages(summary_table: pd.DataFrame, entry_keys: list[str],
                    task_groups: Sequence[TaskGroup]) -> dict[str, dict[str, float]]:
    """Per entry, "<group> average" for each task group it ran every task of, each task with the group's metric
    for it (whatever metric the report ranks by: a short-answer task has exact_match, not acc)."""
    entries = summary_table[entry_keys].astype(str).agg("|".join, axis=1)
    averages: dict[str, dict[str, float]] = {}
    for entry, frame in summary_table.groupby(entries, sort=False):
        by_task = frame.set_index("task")
        for task_group in task_groups:
            values = [by_task[f"{name}_mean"].get(task, np.nan) if f"{name}_mean" in by_task else np.nan
                      for task, name in task_group.metrics.items()]
            if not np.isnan(values).any():
                averages.setdefault(entry, {})[f"{task_group.name} average"] = float(np.mean(values))
    return averages


def _method_side(key: str) -> bool:
    """Settings of the fine-tuning itself, which an ICL run does not share."""
    return key.startswith("method.") or key == "eval_shots"


def paired_items(pairs: pd.DataFrame, predictions: Predictions) -> tuple[np.ndarray, ...] | None:
    """gold, then the label indices of the runs in run_dir_icl and in run_dir (ICL and fine-tuned; or two models):
    one row per pair, one column per test item (ABSENT where a pair lacks it). None when a run has no
    predictions.jsonl."""
    joined = []
    for finetuned_dir, icl_dir in zip(pairs["run_dir"], pairs["run_dir_icl"]):
        finetuned, icl = predictions(finetuned_dir), predictions(icl_dir)
        if finetuned is None or icl is None:
            return None
        joined.append(finetuned.merge(icl, on=["id", "gold"], suffixes=("", "_icl")))
    items = sorted(set().union(*(frame["id"] for frame in joined)))
    column = {item: i for i, item in enumerate(items)}
    labels = sorted(set().union(*(frame["gold"] for frame in joined)) | set().union(
        *(frame[name].dropna() for frame in joined for name in ("prediction", "prediction_icl"))))
    index = {label: i for i, label in enumerate(labels)}
    arrays = np.full((3, len(joined), len(items)), ABSENT)
    for row, frame in enumerate(joined):
        columns = frame["id"].map(column).to_numpy()
        for array, name in zip(arrays, ("gold", "prediction_icl", "prediction")):
            array[row, columns] = [NO_LABEL if pd.isna(value) else index[value] for value in frame[name]]
    return tuple(arrays)


def _span(values: pd.Series) -> str:
    low, high = values.min(), values.max()
    return "" if pd.isna(low) else f"{low:.0f}" if low == high else f"{low:.0f}-{high:.0f}"


def _sorted(table: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """Rows in group order, icl first among methods (the baseline the others are read against)."""
    def key(column: pd.Series) -> pd.Series:
        return column.map(lambda m: "" if in_context(m) else m) if column.name == "method" else column

    return table.sort_values(group, key=key, kind="stable", na_position="first").reset_index(drop=True)
