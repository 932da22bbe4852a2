"""The report's tables as text: markdown (stdout, report.md), LaTeX (report.tex) and one HTML page.

The HTML page is self-contained (users may be offline): inline CSS, a few lines of inline JavaScript
that sort a table by the clicked column, and the plots as base64 PNG data URLs.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

import pandas as pd

from harness.metrics.registry import choosable, reported, title
from harness.report.board import ModelBoard


@dataclass(frozen=True)
class Section:
    title: str
    explanation: str
    table: pd.DataFrame  # formatted text, ready to print
    key_columns: int  # the leading columns name the row; the others hold numbers
    when_empty: str = "(no rows)"


@dataclass(frozen=True)
class Figure:
    caption: str
    png: bytes


def sections(summary: pd.DataFrame, comparison: pd.DataFrame, leaderboard: pd.DataFrame, keys: list[str],
             metric: str) -> list[Section]:
    """`keys`: the group's keys worth a column (those with one value in every row are said once, above)."""
    name = title(metric)
    return [
        Section(f"Results by {' x '.join(keys)}", _summary_explanation(summary), _summary_text(summary, keys, metric),
                len(keys)),
        Section(f"Fine-tuning vs ICL at equal k ({name})", COMPARISON_EXPLANATION.format(metric=name),
                _comparison_text(comparison, keys), len(keys),
                "(no fine-tuned run has an ICL run with the same task, model, template, shots and seed)"),
        Section(f"Leaderboard ({name})", LEADERBOARD_EXPLANATION.format(metric=name),
                _leaderboard_text(leaderboard, keys, metric), 1 + len([k for k in keys if k != "task"])),
    ]


COMPARISON_EXPLANATION = (
    "Each fine-tuned run is paired with the ICL run of the same task, model, template, shots and seed, and "
    "their predictions are joined on the test item. Pooled over the pairs: FT - ICL is the mean difference in "
    "{metric}, with a 95% paired-bootstrap interval (2,000 resamples of the test items, the same draw for every "
    "seed, RNG seed 0); b / c count the items only ICL / only fine-tuning got right; McNemar's test on b and c "
    "(exact binomial below 25 discordant items, else chi-square with continuity correction), treating the "
    "seeds' repeats of an item as independent. Break-even: the queries after which fine-tuning has cost fewer "
    "FLOPs than ICL, training FLOPs / (2N x (ICL tokens - fine-tuned tokens per query)); never: fine-tuned "
    "queries are not cheaper."
)
LEADERBOARD_EXPLANATION = (
    "Per task, each entry's mean {metric} and its rank (1 = best; ties share the best rank). Entries are "
    "ordered by mean win rate, as HELM does: on each task, the share of the other entries an entry beats "
    "(a tie counts half), averaged over the tasks it was run on."
)


BOARD_EXPLANATION = (
    "One row per model: per task, its main metric ({metrics}) as the mean over its ICL runs at k={shots} ± the "
    "standard error over test items, and its rank; the average over the tasks (each task once) and HELM's mean "
    "win rate; the cost of its runs (wall time and tokens forwarded summed over the tasks, the largest peak "
    "memory){finetuning}. Ranks only separate what the test set separates: a model's rank is 1 + the number of "
    "models better than it with a 95% paired-bootstrap interval above zero (2,000 resamples of the items both "
    "scored; for the average, every task's items at once), so models no test tells apart share a rank."
)


def board_sections(boards: list[ModelBoard]) -> list[Section]:
    parts = []
    for board in boards:
        table = board.table
        text = pd.DataFrame({"rank": table["rank"].map(lambda rank: "-" if math.isnan(rank) else f"{rank:.0f}"),
                             "model": table["model"].astype(str)})
        text["average"] = table["average"].map(_number)
        text["mean win rate"] = table["mean_win_rate"].map(_number)
        for task in board.metrics:
            text[task] = [
                "-" if math.isnan(score) else f"{score:.3f}" + ("" if math.isnan(se) else f" ± {se:.3f}") + f" ({rank:.0f})"
                for score, se, rank in zip(table[task], table[f"{task} se"], table[f"{task} rank"])
            ]
        text["wall s"] = table["wall_time_s"].map(lambda value: _number(value, 1))
        text["tokens forwarded"] = table["tokens_forwarded"].map(lambda value: _number(value, 0))
        text["peak MiB"] = table["peak_memory_mb"].map(lambda value: _number(value, 0))
        if "best_finetuning" in table:
            text["best fine-tuning"] = [
                "-" if math.isnan(value) else f"{value:.3f} ({method})"
                for value, method in zip(table["best_finetuning"], table["best_finetuning_method"])
            ]
        metrics = ", ".join(f"{task}: {title(name)}" for task, name in board.metrics.items())
        finetuning = ("; best fine-tuning: the fine-tuning method with the best average over the same tasks, "
                      f"trained on the same k={board.shots} examples") if "best_finetuning" in table else ""
        parts.append(Section(f"Leaderboard across models, {board.shots}-shot",
                             BOARD_EXPLANATION.format(metrics=metrics, shots=board.shots, finetuning=finetuning),
                             text, 2))
    return parts


def _summary_explanation(summary: pd.DataFrame) -> str:
    spread_over = "seeds" if (summary["runs"] == summary["seeds"]).all() else "runs (seeds and the keys left out)"
    return (f"Mean ± standard deviation (ddof=1), and median (interquartile range, linear interpolation), over "
            f"{spread_over}. Train s: mean training time; tokens / query: inference tokens per test example "
            "(ICL pays for its demonstrations at every query).")


def metrics_summarised(summary: pd.DataFrame) -> list[str]:
    """The metrics a summary table has columns for, in the registry's order."""
    return reported([column.removesuffix("_mean") for column in summary.columns if column.endswith("_mean")])


def _summary_text(summary: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    table = summary[keys].map(_key)
    if not (summary["runs"] == summary["seeds"]).all():
        table["runs"] = summary["runs"].astype(str)
    table["seeds"] = summary["seeds"].astype(str)
    table["items"] = summary["items"]
    for name in [metric] + [m for m in metrics_summarised(summary) if m != metric]:
        mean, std, median, iqr = (summary[f"{name}_{part}"] for part in ("mean", "std", "median", "iqr"))
        table[title(name)] = [_mean_std(m, s) for m, s in zip(mean, std)]
        if choosable(name):  # the others (ECE) get mean and std only, to keep the table narrow
            table[f"{title(name)} median (IQR)"] = [f"{_number(m)} ({_number(i)})" for m, i in zip(median, iqr)]
    table["train s"] = summary["train_time_s"].map(lambda value: _number(value, 1))
    table["tokens / query"] = summary["inference_tokens_per_example"].map(lambda value: _number(value, 0))
    return table


def _comparison_text(comparison: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if comparison.empty:
        return pd.DataFrame()
    table = comparison[keys].map(_key)
    table["pairs"] = comparison["pairs"].astype(str)
    table["paired items"] = comparison["items"].map(lambda value: _number(value, 0))
    table["ICL"] = comparison["icl"].map(_number)
    table["FT"] = comparison["finetuned"].map(_number)
    table["FT - ICL"] = comparison["difference"].map(lambda value: _number(value, signed=True))
    table["95% CI"] = [
        "-" if math.isnan(low) else f"[{_number(low, signed=True)}, {_number(high, signed=True)}]"
        for low, high in zip(comparison["ci_low"], comparison["ci_high"])
    ]
    table["b / c"] = ["-" if math.isnan(b) else f"{b:.0f} / {c:.0f}"
                      for b, c in zip(comparison["icl_only"], comparison["finetuned_only"])]
    table["McNemar p"] = ["-" if math.isnan(p) else f"{p:.3g} ({test})"
                          for p, test in zip(comparison["mcnemar_p"], comparison["mcnemar_test"])]
    table["train s"] = comparison["train_time_s"].map(lambda value: _number(value, 1))
    table["ICL tokens / query"] = comparison["icl_tokens_per_example"].map(lambda value: _number(value, 0))
    table["FT tokens / query"] = comparison["tokens_per_example"].map(lambda value: _number(value, 0))
    table["break-even queries"] = comparison["break_even_queries"].map(
        lambda value: "never" if value == math.inf else _number(value, 0))
    return table


def _leaderboard_text(leaderboard: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    entry_keys = [k for k in keys if k != "task"]
    table = leaderboard[["rank", *entry_keys]].map(_key)
    table["mean win rate"] = leaderboard["mean_win_rate"].map(_number)
    table["tasks"] = leaderboard["tasks"].astype(str)
    for column in leaderboard.columns:
        if column.endswith(" average"):  # a task group's, over each task's own metric
            table[column] = leaderboard[column].map(lambda score: "-" if math.isnan(score) else f"{score:.3f}")
    for column in leaderboard.columns:
        if column.endswith(f" {metric}"):
            task = column.removesuffix(f" {metric}")
            table[task] = [
                "-" if math.isnan(score) else f"{score:.3f} ({rank:.0f})"
                for score, rank in zip(leaderboard[column], leaderboard[f"{task} rank"])
            ]
    return table


def _key(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(value: float, digits: int = 3, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:{'+' if signed else ''},.{digits}f}"


def _mean_std(mean: float, std: float) -> str:
    return _number(mean) if math.isnan(std) else f"{_number(mean)} ± {_number(std)}"


def markdown(title: str, intro: str, parts: list[Section]) -> str:
    """Every text escaped (_markdown_text): names come from task, model and template files and imported results,
    and many Markdown viewers render raw HTML."""
    blocks = [f"# {_markdown_text(title)}", _markdown_text(intro)]
    for part in parts:
        blocks += [f"## {_markdown_text(part.title)}", _markdown_text(part.explanation),
                   _markdown_table(part) if len(part.table) else _markdown_text(part.when_empty)]
    return "\n\n".join(blocks) + "\n"


def _markdown_table(part: Section) -> str:
    table = part.table
    align = [":---" if i < part.key_columns else "---:" for i in range(len(table.columns))]
    lines = ["| " + " | ".join(map(_markdown_cell, table.columns)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _markdown_text(text: str) -> str:
    """Text that Markdown shows as written: HTML's special characters as entities (a viewer renders `&lt;` as `<`
    and never runs it), on one line."""
    return html.escape(" ".join(str(text).split("\n")), quote=False)


def _markdown_cell(text: str) -> str:
    return _markdown_text(text).replace("|", "\\|")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                 "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "\n": " ", "\r": " "}


def latex(title: str, parts: list[Section]) -> str:
    """Table environments to \\input into a document that loads booktabs. Every text is escaped (_latex): a name
    from a file can neither run a command nor end the comment line it is on."""
    blocks = [f"% {_latex(title)}: generated by `python -m harness report`; needs \\usepackage{{booktabs}}"]
    for part in parts:
        if not len(part.table):
            continue
        columns = "l" * part.key_columns + "r" * (len(part.table.columns) - part.key_columns)
        rows = [" & ".join(map(_latex, row)) + r" \\" for row in part.table.itertuples(index=False)]
        blocks.append("\n".join([
            r"\begin{table}[ht]", r"\centering", rf"\caption{{{_latex(part.title)}}}", r"\small",
            rf"\begin{{tabular}}{{{columns}}}", r"\toprule", " & ".join(map(_latex, part.table.columns)) + r" \\",
            r"\midrule", *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}",
        ]))
    return "\n\n".join(blocks) + "\n"


def _latex(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(character, character) for character in str(text))


def csv_text(frame: pd.DataFrame) -> str:
    """The frame as CSV, with every text cell a spreadsheet would take for a formula (`=HYPERLINK(...)`, `@SUM(...)`,
    `+cmd|...`: OWASP's CSV injection) prefixed with a quote, so that it opens as the text it is."""
    return frame.map(_spreadsheet_text).to_csv(index=False)


def _spreadsheet_text(value: object) -> object:
    if not isinstance(value, str) or not value.startswith(("=", "+", "-", "@", "\t", "\r")) or value == "-":
        return value
    try:
        float(value)  # "-0.012": a number written as text
        return value
    except ValueError:
        return "'" + value


# Click a header to sort by that column (again to reverse): numbers by value (thousands separators,
# a leading "[" or "(" ignored), then text.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(th => th.addEventListener("click", () => {
  const table = th.closest("table"), column = th.cellIndex, ascending = th.dataset.order !== "ascending";
  table.querySelectorAll("th").forEach(other => delete other.dataset.order);
  th.dataset.order = ascending ? "ascending" : "descending";
  const value = row => {
    const text = row.cells[column].textContent, number = parseFloat(text.replace(/[,[(]/g, ""));
    return isNaN(number) ? text : number;
  };
  const rows = Array.from(table.tBodies[0].rows).sort((a, b) => {
    const x = value(a), y = value(b);
    const order = typeof x !== typeof y ? (typeof x === "number" ? -1 : 1) : x < y ? -1 : x > y ? 1 : 0;
    return ascending ? order : -order;
  });
  table.tBodies[0].append(...rows);
}));
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td { white-space: nowrap; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[data-order=ascending]::after { content: " \\25B2"; }
th[data-order=descending]::after { content: " \\25BC"; }
p.explanation { max-width: 60em; color: #555; }
figure { display: inline-block; margin: 1em 2em 1em 0; vertical-align: top; }
img { max-width: 100%; }
"""


def html_page(title: str, intro: str, parts: list[Section], figures: list[Figure]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for part in parts:
        body += [f"<h2>{html.escape(part.title)}</h2>", f'<p class="explanation">{html.escape(part.explanation)}</p>',
                 _html_table(part) if len(part.table) else f"<p>{html.escape(part.when_empty)}</p>"]
    if figures:
        body.append("<h2>Plots</h2>")
    for figure in figures:
        data = base64.b64encode(figure.png).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(figure.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + f"\n<script>{SORT_SCRIPT}</script>\n"
            "</body>\n</html>\n")


def _html_table(part: Section) -> str:
    header = "".join(f"<th>{html.escape(column)}</th>" for column in part.table.columns)
    rows = [
        "<tr>" + "".join(
            f"<td>{html.escape(cell)}</td>" if i < part.key_columns else f'<td class="number">{html.escape(cell)}</td>'
            for i, cell in enumerate(row)
        ) + "</tr>"
        for row in part.table.itertuples(index=False)
    ]
    return (f'<table class="sortable">\n<thead><tr>{header}</tr></thead>\n<tbody>\n' + "\n".join(rows)
            + "\n</tbody>\n</table>")

