"""The leaderboard across models (`python -m harness report`): ranks, ties, averages, win rates, costs and the
best fine-tuning, on synthetic records of ten items per task whose answers are computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.inputs.registry import TaskGroup
from harness.report.board import main_metrics, model_boards
from harness.report.load import load_predictions, load_records
from harness.report.stats import separable_ranks
from helpers import in_headless_browser, report, write_run

# (task, model) -> items right at k=0. t1: a and b differ on one item (no test separates them), c is far
# behind; t2: a and b right on the same items.
RIGHT = {("t1", "a"): set(range(10)), ("t1", "b"): set(range(9)), ("t1", "c"): {0, 1},
         ("t2", "a"): set(range(8)), ("t2", "b"): set(range(8)), ("t2", "c"): {0}}


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    for (task, model), right in RIGHT.items():
        write_run(results, task=task, model=model, shots=0, correct=right, stderr={"accuracy": 0.01 * len(right)},
                  cost={"wall_time_s": {"a": 10.0, "b": 2.0, "c": 1.0}[model], "tokens_forwarded": 1000,
                        "peak_memory_mb": {"a": 900.0, "b": 500.0, "c": 300.0}[model] + (task == "t2")})
    return results


def _boards(results: Path, **kwargs):
    records = load_records(results)
    return model_boards(records.runs, [], "accuracy", load_predictions, **kwargs)


def test_ranks_tie_what_the_bootstrap_cannot_separate(results: Path) -> None:
    [board] = _boards(results)
    table = board.table.set_index("model")
    assert board.shots == 0 and board.metrics == {"t1": "accuracy", "t2": "accuracy"}
    assert list(board.table["model"]) == ["a", "b", "c"]
    assert table["t1"].tolist() == [1.0, 0.9, 0.2] and table["t1 se"].tolist() == pytest.approx([0.1, 0.09, 0.02])
    assert table["t1 rank"].tolist() == [1, 1, 3] and table["t2 rank"].tolist() == [1, 1, 3]
    assert table["average"].tolist() == pytest.approx([0.9, 0.85, 0.15]) and table["rank"].tolist() == [1, 1, 3]
    # HELM's win rate per task (t1: a beats both, b one; t2: a and b tie), averaged over the tasks
    assert table["mean_win_rate"].tolist() == pytest.approx([0.875, 0.625, 0.0])
    assert table["wall_time_s"].tolist() == [20.0, 4.0, 2.0] and table["tokens_forwarded"].tolist() == [2000] * 3
    assert table["peak_memory_mb"].tolist() == [901.0, 501.0, 301.0]
    assert "best_finetuning" not in table  # no fine-tuning run


def test_without_per_item_predictions_scores_alone_order_the_models(results: Path) -> None:
    records = load_records(results)
    [board] = model_boards(records.runs, [], "accuracy", lambda run_dir, metric: None)
    assert board.table.set_index("model")["t1 rank"].tolist() == [1, 2, 3]


def test_a_task_a_model_lacks_leaves_its_average_and_rank_blank(results: Path, tmp_path: Path) -> None:
    write_run(results, task="t3", model="a", shots=0, correct=set(range(5)))
    [board] = _boards(results)
    table = board.table.set_index("model")
    assert table.loc["a", "average"] == pytest.approx((1.0 + 0.8 + 0.5) / 3)
    assert np.isnan(table.loc["b", "average"]) and np.isnan(table.loc["b", "rank"])
    assert table.loc["a", "t3 rank"] == 1 and np.isnan(table.loc["c", "t3"])
    assert list(board.table["model"])[0] == "a"


def test_best_fine_tuning_beside_icl_at_the_same_k(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for model in ("a", "b"):
        for task in ("t1", "t2"):
            write_run(results, task=task, model=model, shots=4, correct=set(range(5)))
    for method, right in (("lora", {"t1": 6, "t2": 8}), ("bitfit", {"t1": 9, "t2": 3})):
        for task in ("t1", "t2"):
            write_run(results, task=task, model="a", shots=4, method=method, correct=set(range(right[task])))
    write_run(results, task="t1", model="b", shots=4, method="lora", correct=set(range(10)))  # t2 missing: no average
    write_run(results, task="t1", model="a", shots=16, correct=set(range(3)))  # one model at k=16: no board
    [board] = _boards(results)
    table = board.table.set_index("model")
    assert board.shots == 4
    assert table.loc["a", "best_finetuning"] == pytest.approx(0.7) and table.loc["a", "best_finetuning_method"] == "lora"
    assert np.isnan(table.loc["b", "best_finetuning"])


def test_each_task_is_ranked_by_its_groups_metric() -> None:
    runs = pd.DataFrame({"task": ["hellaswag", "hellaswag", "sst2", "copa"], "acc": [0.4, 0.5, np.nan, 0.6],
                         "acc_norm": [0.5, 0.6, np.nan, 0.7], "accuracy": [np.nan, np.nan, 0.8, np.nan],
                         **{name: np.nan for name in ("acc_bytes", "exact_match", "macro_f1")}})
    group = TaskGroup(name="leaderboard", description="", metrics={"hellaswag": "acc_norm", "copa": "acc"})
    assert main_metrics(runs, [group], "accuracy") == {"copa": "acc", "hellaswag": "acc_norm", "sst2": "accuracy"}
    assert main_metrics(runs, [], "acc") == {"copa": "acc", "hellaswag": "acc", "sst2": "accuracy"}


def test_separable_ranks() -> None:
    better = np.array([[False, False, False], [True, False, False], [True, True, False]])  # 0 best, 2 worst
    assert separable_ranks(better).tolist() == [1, 2, 3]
    assert separable_ranks(np.zeros((3, 3), dtype=bool)).tolist() == [1, 1, 1]


def test_the_report_shows_the_board_in_every_format(results: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = report(capsys, str(results))
    assert code == 0
    assert "## Leaderboard across models, 0-shot" in out
    assert "| 1 | a | 0.900 | 0.875 | 1.000 ± 0.100 (1) | 0.800 ± 0.080 (1) | 20.0 | 2,000 | 901 |" in out
    written = results / "report"
    assert "Leaderboard across models, 0-shot" in (written / "report.tex").read_text()
    assert "wall time of its runs" in (written / "report.html").read_text()
    models = pd.read_csv(written / "models.csv")
    assert list(models["model"]) == ["a", "b", "c"] and set(models["shots"]) == {0}


BOARD_CHECK = """
<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.sortable");
  const header = Array.from(table.tHead.rows[0].cells).find(th => th.textContent === "peak MiB");
  header.click();
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({
    title: document.querySelector("h2").textContent,
    models: Array.from(table.tBodies[0].rows).map(row => row.cells[1].textContent),
    images: Array.from(document.images).map(img => [img.alt, img.complete && img.naturalWidth > 100]),
  });
  document.body.append(out);
});
</script>
"""


def test_the_board_sorts_in_a_headless_browser(results: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert report(capsys, str(results))[0] == 0
    result = in_headless_browser((results / "report" / "report.html").read_text(), BOARD_CHECK, tmp_path)
    assert result["title"] == "Leaderboard across models, 0-shot"
    assert result["models"] == ["c", "b", "a"]  # ascending peak memory
    assert ["Each model's average over the leaderboard's tasks against the wall time of its runs", True] in result[
        "images"]
