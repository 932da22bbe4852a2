"""`python -m harness report [results_dir] [key=value ...]`: options, filters, and the files written."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.files import write_text_atomic
from harness.inputs.registry import group_files, load_group
from harness.metrics.registry import METRICS, choosable
from harness.metrics.registry import title as metric_title
from harness.report import plots, render, studies, tables
from harness.report.board import ModelBoard, model_boards
from harness.report.lmeval_import import is_imported
from harness.report.load import IDENTITY, as_text, load_predictions, load_records
from harness.runs.study import Study, read_studies

USAGE = """usage: python -m harness report [results_dir] [key=value ...]

Reads every run record in results_dir (default: results), prints the report as markdown and writes
report.md, report.tex, report.html (sortable tables and plots) and CSV files to results_dir/report.

options:
  metric=NAME                what the comparison, leaderboard and plots use: accuracy, macro_f1 (classification),
                             acc, acc_norm, acc_bytes, acc_mutual_info (multiple choice; acc: cloze too), exact_match,
                             exact_match_strict, exact_match_flexible (short answers, GSM8K), word_perplexity,
                             byte_perplexity, bits_per_byte (perplexity tasks: lower ranks higher);
                             default: the first of these the runs recorded
  group=KEY,KEY,...          what a row stands for (default: task,model,method,template,scorer,calibration,shots);
                             e.g. group=task,model,method,shots pools templates. scorer, calibration and any
                             setting that differs between otherwise identical runs are always added
  out=DIR                    where the files go (default: results_dir/report)
  lmeval=PATH,PATH,...       lm-evaluation-harness results files (or folders holding them) to put beside the runs;
                             those under results_dir (outside run directories) are read anyway
filters (a comma means any of):
  task=sst2 model=gpt2 method=icl,lora shots=4,8 seed=1,2 template=... scorer=... calibration=...
  or any config key: demos=balanced method.steps=32
"""
OPTIONS = ("metric", "group", "out", "lmeval")
FILES = ("report.md", "report.tex", "report.html", "summary.csv", "comparison.csv", "leaderboard.csv", "runs.csv",
         "models.csv")


@dataclass
class ReportOptions:
    results_dir: Path = Path("results")
    metric: str | None = None  # None: accuracy, or acc where only multiple-choice runs recorded one
    group: list[str] | None = None  # None: tables.DEFAULT_GROUP
    out: Path | None = None  # None: results_dir / "report"
    lmeval: list[Path] = field(default_factory=list)  # lm-evaluation-harness results files or folders
    filters: dict[str, list[str]] = field(default_factory=dict)


def report_command(arguments: list[str]) -> int:
    if {"-h", "--help"} & set(arguments):
        print(USAGE, end="")
        return 0
    options = parse_arguments(arguments)
    records = load_records(options.results_dir, options.lmeval)
    if records.incomplete:
        print(f"note: {records.incomplete} run directories in {options.results_dir} have no metrics.json (still "
              "running, or interrupted): left out", file=sys.stderr)
    for skipped in records.skipped:
        print(f"note: left out {skipped.path}: {skipped.reason}", file=sys.stderr)
    for model, count in records.plain_with_chat_template.items():
        print(f"note: {count} run{'s' * (count != 1)} of {model} rendered plain prompts though its tokenizer has a "
              "chat template (runs with chat_template=true are told apart by that setting)", file=sys.stderr)
    imported = int(records.runs["run_dir"].map(is_imported).sum())
    if imported:
        print(f"note: {imported} task{'s' * (imported != 1)} read from lm-evaluation-harness results files "
              "(model names end in \"(lm-eval ...)\")", file=sys.stderr)
    runs, settings = _select(records.runs, records.settings, options.filters)
    if options.metric is None:  # the first metric the runs recorded: accuracy, or a multiple-choice task's acc
        options.metric = next(iter(tables.metrics_to_choose(runs)), "accuracy")
    if options.metric not in runs or runs[options.metric].isna().all():
        raise HarnessError(f"no run in {options.results_dir} recorded {options.metric}")
    group = tables.grouping(options.group, tables.differing_settings(runs, settings))
    unknown = [key for key in group if key not in IDENTITY and key not in settings.columns]
    if unknown:
        raise HarnessError(f"cannot group by '{unknown[0]}' (keys: {', '.join(IDENTITY)}, or a config key)")
    runs = runs.join(settings[[key for key in group if key not in IDENTITY]])

    summary = tables.summary(runs, group, options.metric)
    predictions = lru_cache(maxsize=None)(partial(load_predictions, metric=options.metric))
    comparison = tables.comparison(runs, settings, group, options.metric, predictions)
    task_groups = [load_group(name) for name in group_files()]
    leaderboard = tables.leaderboard(summary, group, options.metric, task_groups)
    boards = model_boards(runs, task_groups, options.metric, lru_cache(maxsize=None)(load_predictions))
    # keys with one value in every row are said once, above the tables, rather than in a column each
    constant = {key: summary[key].iloc[0] for key in group
                if len(summary) > 1 and summary[key].nunique(dropna=False) == 1}
    keys = [key for key in group if key not in constant]
    title = f"harness report: {options.results_dir}"
    intro = (f"{len(runs)} runs" + "".join(f", {key}={','.join(values)}" for key, values in options.filters.items())
             + f"; metric: {options.metric}"
             + ("; every row has " + ", ".join(f"{k}={as_text(v)}" for k, v in constant.items()) if constant else "")
             + ".")
    recorded = _studies(options)
    parts = (render.board_sections(boards) + render.sections(summary, comparison, leaderboard, keys, options.metric)
             + studies.sections(recorded))
    figures = [render.Figure(caption, png) for caption, png in (
        (f"{metric_title(options.metric)} against k, ± one standard deviation over seeds",
         plots.metric_vs_shots(summary, group, options.metric)),
        ("Fine-tuning minus ICL, with 95% paired-bootstrap intervals",
         plots.finetuning_vs_icl(comparison, group, options.metric)),
        ("Each model's average over the leaderboard's tasks against the wall time of its runs",
         plots.score_vs_cost(boards)),
    ) if png is not None] + studies.figures(recorded)

    markdown = render.markdown(title, intro, parts)
    out = options.out or options.results_dir / "report"
    outputs = (markdown, render.latex(title, parts), render.html_page(title, intro, parts, figures),
               *(render.csv_text(frame) for frame in (summary, comparison, leaderboard,
                                                         pd.concat([runs, settings.add_prefix("config.")], axis=1),
                                                         _boards_frame(boards))))
    try:
        for name, text in zip(FILES, outputs):
            write_text_atomic(out / name, text)
    except OSError as error:
        raise HarnessError(f"cannot write the report to {out} ({error.strerror or error}); choose another with "
                           "out=DIR") from None
    print(markdown, end="")
    print(f"report written to {out}/ ({', '.join(FILES)})", file=sys.stderr)
    return 0


def _studies(options: ReportOptions) -> list[studies.StudyResult]:
    """The sensitivity studies recorded in results_dir/studies (those the task and model filters accept)."""
    found, problems = read_studies(options.results_dir)
    for path, reason in problems:
        print(f"note: left out {path}: {reason}", file=sys.stderr)
    results = []
    for study in found:
        if not _accepts(study, options.filters):
            continue
        try:
            results.append(studies.analyse(study))
        except HarnessError as error:
            print(f"note: left out the sensitivity study {study.name}: {error}", file=sys.stderr)
    return results


def _accepts(study: Study, filters: dict[str, list[str]]) -> bool:
    return all(getattr(study, key) in values for key, values in filters.items() if key in ("task", "model"))


def _boards_frame(boards: list[ModelBoard]) -> pd.DataFrame:
    """The leaderboards across models as one table (models.csv): a row per model and k."""
    frames = [board.table.assign(shots=board.shots) for board in boards]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["rank", "model", "shots"])


def parse_arguments(arguments: list[str]) -> ReportOptions:
    options = ReportOptions()
    positional = [argument for argument in arguments if "=" not in argument]
    flags = [argument for argument in positional if argument.startswith("-")]
    if flags:
        raise HarnessError(f"unknown flag '{flags[0]}' (python -m harness report --help)")
    if len(positional) > 1:
        raise HarnessError(f"one results directory at most, got {' and '.join(positional)}")
    if positional:
        options.results_dir = Path(positional[0])
    for argument in (argument for argument in arguments if "=" in argument):
        key, _, value = argument.partition("=")
        if not value:
            raise HarnessError(f"'{argument}' needs a value ({key}=...)")
        if key == "metric":
            if not choosable(value):
                raise HarnessError(f"unknown metric '{value}' (choose from: "
                                   f"{', '.join(name for name in METRICS if choosable(name))}, exact_match_<filter>)")
            options.metric = value
        elif key == "group":
            options.group = [part.strip() for part in value.split(",") if part.strip()]
        elif key == "out":
            options.out = Path(value)
        elif key == "lmeval":
            options.lmeval = [Path(part.strip()) for part in value.split(",") if part.strip()]
        else:
            options.filters[key] = [part.strip() for part in value.split(",")]
    return options


def _select(runs: pd.DataFrame, settings: pd.DataFrame, filters: dict[str, list[str]]) -> tuple[pd.DataFrame, ...]:
    """The runs every filter accepts; identity keys are matched on metrics.json, others on config.yaml."""
    keep = pd.Series(True, index=runs.index)
    for key, values in filters.items():
        if key in IDENTITY:
            column = runs[key].map(as_text)
        elif key in settings.columns:
            column = settings[key]
        else:
            raise HarnessError(f"unknown filter key '{key}' (options: {', '.join(OPTIONS)}; filters: "
                               f"{', '.join(IDENTITY)}, or a config key such as demos or method.steps)")
        matches = column.isin(values)
        if not matches.any():
            raise HarnessError(f"no run has {key}={','.join(values)} (values: {', '.join(sorted(column.unique()))})")
        keep &= matches
    if not keep.any():
        raise HarnessError("no run matches every filter: " + " ".join(f"{k}={','.join(v)}" for k, v in filters.items()))
    return runs[keep].reset_index(drop=True), settings[keep].reset_index(drop=True)
