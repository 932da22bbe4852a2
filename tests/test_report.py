"""`python -m harness report` on synthetic run records whose aggregates are computed by hand.

The records: task toy, model m, ten test items (gold alternating neg/pos). ICL at k=4 with seeds
1-4 gets 5, 6, 8 and 9 items right; LoRA at k=4 with seeds 1-2 gets 8 and 9. Pooled over the two
seeds LoRA shares with ICL, ICL alone is right on 3 items and LoRA alone on 9 (see _correct).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report.stats import (
    break_even_queries,
    discordant_counts,
    mcnemar,
    paired_bootstrap,
    weighted_metric,
    win_rates,
)
from helpers import in_headless_browser, report, write_run

LORA_TRAINING = {"trainable_parameters": 100, "total_parameters": 1_000_000, "steps": 2, "examples_seen": 8,
                 "tokens_seen": 100, "train_time_s": 3.0, "peak_memory_mb": 1.0, "train_flops": 1.8e9, "losses": [1.0]}
_correct = {  # (method, seed) -> items right
    ("icl", 1): set(range(5)), ("icl", 2): set(range(6)), ("icl", 3): set(range(8)), ("icl", 4): set(range(9)),
    ("lora", 1): set(range(2, 10)),  # vs icl seed 1: icl alone 0, 1; lora alone 5-9
    ("lora", 2): set(range(1, 10)),  # vs icl seed 2: icl alone 0; lora alone 6-9
}


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for (method, seed), correct in _correct.items():
        write_run(root, method=method, seed=seed, correct=correct, tokens=200.0 if method == "icl" else 20.0,
                  training=LORA_TRAINING if method == "lora" else None, macro_f1=0.1 * seed)
    (root / ".multirun" / "2024-01-01_00-00-00" / "0").mkdir(parents=True)  # Hydra's bookkeeping: skipped
    return root


def test_summary_means_stds_medians_iqr_by_hand(results: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = report(capsys, results)
    assert code == 0, err
    summary = pd.read_csv(results / "report" / "summary.csv")
    icl = summary[summary["method"] == "icl"].iloc[0]
    # accuracies 0.5, 0.6, 0.8, 0.9: std with ddof=1 = sqrt(0.1 / 3); quartiles by linear interpolation
    assert (icl["runs"], icl["seeds"], icl["items"]) == (4, 4, 10)
    assert icl["accuracy_mean"] == pytest.approx(0.7)
    assert icl["accuracy_std"] == pytest.approx(math.sqrt(0.1 / 3))
    assert icl["accuracy_median"] == pytest.approx(0.7)
    assert (icl["accuracy_q1"], icl["accuracy_q3"], icl["accuracy_iqr"]) == pytest.approx((0.575, 0.825, 0.25))
    assert icl["macro_f1_mean"] == pytest.approx(0.25)  # 0.1, 0.2, 0.3, 0.4
    assert math.isnan(icl["train_time_s"]) and icl["inference_tokens_per_example"] == 200
    lora = summary[summary["method"] == "lora"].iloc[0]
    assert lora["accuracy_mean"] == pytest.approx(0.85) and lora["accuracy_std"] == pytest.approx(math.sqrt(0.005))
    assert lora["train_time_s"] == 3.0
    assert list(summary["method"]) == ["icl", "lora"]  # icl first: the baseline
    # markdown on stdout: constant keys said once, numbers formatted
    assert "every row has task=toy, model=m, template=plain, scorer=rank, calibration=none, shots=4" in out
    assert "| icl | 4 | 10 | 0.700 ± 0.183 | 0.700 (0.250) |" in out
    for name in ("report.md", "report.tex", "report.html", "summary.csv", "comparison.csv", "leaderboard.csv",
                 "runs.csv"):
        assert (results / "report" / name).stat().st_size > 0
    assert (results / "report" / "report.md").read_text() == out


def test_comparison_pairs_runs_and_tests_them(results: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = report(capsys, results)
    assert code == 0, err
    [row] = pd.read_csv(results / "report" / "comparison.csv").to_dict("records")
    assert (row["method"], row["pairs"], row["seeds"], row["items"]) == ("lora", 2, 2, 20)
    assert (row["icl"], row["finetuned"], row["difference"]) == pytest.approx((0.55, 0.85, 0.3))
    assert (row["icl_only"], row["finetuned_only"], row["mcnemar_test"]) == (3, 9, "exact")
    assert row["mcnemar_p"] == pytest.approx(598 / 4096)  # 2 * (C(12,0) + C(12,1) + C(12,2) + C(12,3)) / 2^12
    assert row["ci_low"] < 0.3 < row["ci_high"]
    # break-even: 1.8e9 FLOPs / (2 x 1e6 parameters x (200 - 20) tokens) = 5 queries
    assert row["break_even_queries"] == pytest.approx(5.0)
    assert "| lora | 2 | 20 | 0.550 | 0.850 | +0.300 |" in out and "3 / 9 | 0.146 (exact)" in out
    # the same records give the same interval
    report(capsys, results)
    [again] = pd.read_csv(results / "report" / "comparison.csv").to_dict("records")
    assert (again["ci_low"], again["ci_high"]) == (row["ci_low"], row["ci_high"])


def test_mcnemar_by_hand() -> None:
    exact = mcnemar(3, 9)
    assert exact.exact and exact.statistic == 3 and exact.p_value == pytest.approx(598 / 4096)
    assert mcnemar(0, 0).p_value == 1.0 and mcnemar(4, 4).p_value == 1.0
    large = mcnemar(10, 25)  # 35 discordant: chi-square, (|10 - 25| - 1)^2 / 35 = 5.6
    assert not large.exact and large.statistic == pytest.approx(5.6)
    assert large.p_value == pytest.approx(0.0179604775, rel=1e-6)  # scipy.stats.chi2.sf(5.6, 1)
    assert mcnemar(20, 20).p_value == 1.0


def test_paired_statistics_on_arrays() -> None:
    gold = np.array([[0, 1, 0, 1], [0, 1, 0, -2]])  # the second pair lacks the last item
    icl = np.array([[0, 0, 0, 1], [1, 1, 0, -2]])
    finetuned = np.array([[0, 1, 0, 1], [0, 1, -1, -2]])  # -1: a generation that named no label
    assert discordant_counts(gold, icl, finetuned) == (1, 2)
    difference, low, high = paired_bootstrap("accuracy", gold, icl, finetuned, resamples=500)
    assert difference == pytest.approx(((1.0 - 0.75) + (2 / 3 - 2 / 3)) / 2)
    assert low <= difference <= high
    assert paired_bootstrap("accuracy", gold, icl, finetuned, resamples=500) == (difference, low, high)


def test_weighted_macro_f1_matches_the_metric_module() -> None:
    from harness.metrics.functions import NO_LABEL
    from harness.metrics.registry import MetricInputs, measure_all

    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, size=40)
    predicted = np.where(rng.random(40) < 0.1, NO_LABEL, rng.integers(0, 3, size=40))
    predicted[predicted == 2] = 1  # label 2 never predicted: its F1 counts as 0
    expected, _ = measure_all(["accuracy", "macro_f1"], MetricInputs(predictions=predicted.tolist(),
                                                                     references=gold.tolist()))
    ones = np.ones((1, 40))
    assert weighted_metric("macro_f1", ones, gold, predicted)[0] == pytest.approx(expected["macro_f1"])
    assert weighted_metric("accuracy", ones, gold, predicted)[0] == pytest.approx(expected["accuracy"])
    drawn = np.zeros((1, 40))
    drawn[0, :10] = 2  # a resample: the first ten items twice each
    assert weighted_metric("macro_f1", drawn, gold, predicted)[0] == pytest.approx(
        measure_all(["macro_f1"], MetricInputs(predictions=predicted[:10].tolist(),
                                               references=gold[:10].tolist()))[0]["macro_f1"])


def test_break_even_and_win_rates() -> None:
    assert break_even_queries(1.8e9, 1e6, 200, 20) == pytest.approx(5.0)
    assert break_even_queries(1e9, 1e6, 20, 20) == math.inf  # fine-tuned queries are not cheaper: never
    assert list(win_rates(pd.Series([0.9, 0.8, 0.8]))) == [1.0, 0.25, 0.25]
    assert win_rates(pd.Series([0.5])).isna().all()


def test_leaderboard_ranks_by_mean_win_rate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # task A: x 0.9, y 0.8, z 0.8 -> win rates 1, 0.25, 0.25; task B: x 0.5, y 0.7, z 0.6 -> 0, 1, 0.5
    scores = {("A", "x"): 9, ("A", "y"): 8, ("A", "z"): 8, ("B", "x"): 5, ("B", "y"): 7, ("B", "z"): 6}
    for (task, model), right in scores.items():
        write_run(tmp_path / "r", task=task, model=model, correct=set(range(right)))
    code, out, err = report(capsys, tmp_path / "r")
    assert code == 0, err
    board = pd.read_csv(tmp_path / "r" / "report" / "leaderboard.csv")
    assert list(board["model"]) == ["y", "x", "z"]
    assert list(board["mean_win_rate"]) == pytest.approx([0.625, 0.5, 0.375])
    assert list(board["rank"]) == [1, 2, 3]
    assert list(board["A rank"]) == [2, 1, 2] and list(board["B rank"]) == [1, 3, 2]  # ties share the best rank
    assert "| 1 | y | 0.625 | 2 | 0.800 (2) | 0.700 (1) |" in out


def test_filters_and_grouping(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "r"
    for template, seed, right in (("plain", 1, 5), ("plain", 2, 7), ("other", 1, 6), ("other", 2, 10)):
        write_run(root, template=template, seed=seed, correct=set(range(right)))
    write_run(root, model="m2", seed=1, correct=set(range(3)))
    write_run(root, seed=1, correct=set(range(4)), config={"demos": "balanced"})  # a different experiment
    code, out, err = report(capsys, root, "model=m", "template=plain")
    assert code == 0, err
    summary = pd.read_csv(root / "report" / "summary.csv")
    assert set(summary["model"]) == {"m"} and set(summary["template"]) == {"plain"}
    # demos differs between runs that agree on everything else: a column of its own, never averaged
    assert sorted(zip(summary["demos"], summary["runs"])) == [("balanced", 1), ("random", 2)]
    code, out, err = report(capsys, root, "model=m", "demos=random", "group=task,model,method,shots")
    assert code == 0, err
    [row] = pd.read_csv(root / "report" / "summary.csv").to_dict("records")
    assert (row["runs"], row["seeds"]) == (4, 2)  # two templates x two seeds, pooled
    assert row["accuracy_mean"] == pytest.approx(0.7) and row["accuracy_median"] == pytest.approx(0.65)
    assert "runs (seeds and the keys left out)" in out
    code, out, err = report(capsys, root, "shots=4", "seed=2", f"out={tmp_path / 'elsewhere'}")
    assert code == 0 and (tmp_path / "elsewhere" / "report.html").exists()
    assert set(pd.read_csv(tmp_path / "elsewhere" / "runs.csv")["seed"]) == {2}


def test_pairs_share_every_setting_but_the_methods_own(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "r"
    write_run(root, seed=1, correct=set(range(5)), config={"demos": "random"})
    write_run(root, method="lora", seed=1, correct=set(range(7)), training=LORA_TRAINING,
              config={"demos": "balanced", "method": {"name": "lora", "steps": 4}})
    code, out, err = report(capsys, root)
    assert code == 0, err
    assert "(no fine-tuned run has an ICL run with the same task" in out  # demos differ: not a pair
    write_run(root, seed=1, correct=set(range(6)), config={"demos": "balanced"})
    code, out, err = report(capsys, root)
    [row] = pd.read_csv(root / "report" / "comparison.csv").to_dict("records")
    assert row["difference"] == pytest.approx(0.1)  # method.steps (icl has none) does not stop the pairing


def test_a_setting_older_records_lack_does_not_split_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "r"
    write_run(root, seed=1, correct=set(range(5)))
    write_run(root, seed=2, correct=set(range(7)), config={"retriever": "some-encoder"})  # a setting added since
    write_run(root, method="lora", seed=2, correct=set(range(8)), training=LORA_TRAINING,
              config={"retriever": "some-encoder"})
    code, _, err = report(capsys, root)
    assert code == 0, err
    summary = pd.read_csv(root / "report" / "summary.csv")
    assert "retriever" not in summary and list(summary["runs"]) == [2, 1]
    [row] = pd.read_csv(root / "report" / "comparison.csv").to_dict("records")
    assert row["pairs"] == 1 and row["difference"] == pytest.approx(0.1)


@pytest.mark.parametrize(("arguments", "message"), [
    (["missing"], "error: results directory '{root}/missing' does not exist"),
    (["empty"], "error: no valid run records in '{root}/empty'"),
    (["results", "tsk=toy"], "error: unknown filter key 'tsk'"),
    (["results", "metric=f1"], "error: unknown metric 'f1' (choose from: accuracy, macro_f1, acc, acc_norm, acc_bytes, "
     "acc_mutual_info, exact_match, perplexity, word_perplexity, byte_perplexity, bits_per_byte, exact_match_<filter>)"),
    (["results", "task=sst2"], "error: no run has task=sst2 (values: toy)"),
    (["results", "group=task,flavour"], "error: cannot group by 'flavour'"),
    (["results", "--verbose"], "error: unknown flag '--verbose'"),
])
def test_one_line_errors(results: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str) -> None:
    (results.parent / "empty").mkdir()
    code, out, err = report(capsys, *(str(results.parent / a) if "=" not in a and not a.startswith("-") else a
                                      for a in arguments))
    assert code == 2 and out == ""
    assert err.startswith(message.format(root=results.parent)) and err.count("\n") == 1


def test_a_metrics_file_that_is_not_a_run_record_is_left_out_and_named(results: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    (results / "notes").mkdir()
    (results / "notes" / "metrics.json").write_text('{"accuracy": 0.5}')
    code, out, err = report(capsys, results)
    assert code == 0 and "| icl | 4 | 10 | 0.700 ± 0.183" in out
    assert f"note: left out {results / 'notes'}: metrics.json: record format 1, this harness reads 2" in err


def test_incomplete_runs_are_left_out_with_a_note(results: Path, capsys: pytest.CaptureFixture) -> None:
    interrupted = results / "toy__m__icl__4shot__seed9__0123456789"
    interrupted.mkdir()
    code, _, err = report(capsys, results)
    assert code == 0 and "1 run directories" in err
    assert "seed9" not in (results / "report" / "runs.csv").read_text()


@pytest.mark.parametrize("damage", ["cut at a line", "cut mid-line", "edited", "missing", "NaN metric",
                                    "not JSON"])
def test_damaged_records_are_left_out_and_named(tmp_path: Path, capsys: pytest.CaptureFixture, damage: str) -> None:
    root = tmp_path / "r"
    write_run(root, seed=1, correct=set(range(5)))
    damaged = write_run(root, seed=2, correct=set(range(9)))
    predictions = damaged / "predictions.jsonl"
    lines = predictions.read_text().splitlines(keepends=True)
    if damage == "cut at a line":
        predictions.write_text("".join(lines[:5]))
    elif damage == "cut mid-line":
        predictions.write_text("".join(lines[:5]) + lines[5][:20])
    elif damage == "edited":
        predictions.write_text("".join(lines).replace('"prediction": "neg"', '"prediction": "pos"', 1))
    elif damage == "missing":
        predictions.unlink()
    elif damage == "NaN metric":
        (damaged / "metrics.json").write_text((damaged / "metrics.json").read_text().replace('"accuracy": 0.9',
                                                                                             '"accuracy": NaN'))
    else:
        (damaged / "metrics.json").write_text((damaged / "metrics.json").read_text()[:100])
    code, out, err = report(capsys, root)
    assert code == 0, err
    expected = {"cut at a line": "predictions.jsonl is not the file the run wrote (5 lines for 10 items: cut short)",
                "cut mid-line": "predictions.jsonl is not the file the run wrote (5 lines for 10 items: cut short)",
                "edited": "predictions.jsonl is not the file the run wrote; its sha256 differs",
                "missing": "predictions.jsonl cannot be read",
                "NaN metric": "metrics.json: metric accuracy is nan, not a finite number",
                "not JSON": "metrics.json: not valid JSON"}[damage]
    assert f"note: left out {damaged}: {expected}" in err, err
    [row] = pd.read_csv(root / "report" / "summary.csv").to_dict("records")
    assert row["runs"] == 1 and row["accuracy_mean"] == 0.5  # the damaged run is not averaged in


def test_a_record_of_changed_inputs_is_superseded_by_the_newer_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "r"
    old = write_run(root, seed=1, correct=set(range(5)))
    new = write_run(root, seed=1, correct=set(range(8)), inputs={"template_file": "edited", "eval_data": "relabelled"})
    os.utime(old / "metrics.json", ns=(1, 1))  # the older record
    code, out, err = report(capsys, root)
    assert code == 0, err
    assert f"note: left out {old}: superseded by {new.name}: same settings, changed template_file, eval_data since" in err
    [row] = pd.read_csv(root / "report" / "summary.csv").to_dict("records")
    assert row["runs"] == 1 and row["accuracy_mean"] == 0.8


def test_unwritable_report_directory_is_one_line(results: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = report(capsys, results, "out=/proc/harness-report")
    assert code == 2 and err.startswith("error: cannot write the report to /proc/harness-report (") and err.count("\n") == 1


# Run in the page after load: sort the first table by accuracy (descending: two clicks), then write what
# the page shows into the DOM, which --dump-dom prints.
CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.sortable");
  const header = Array.from(table.tHead.rows[0].cells).find(th => th.textContent === "accuracy");
  header.click(); header.click();
  const result = {
    methods: Array.from(table.tBodies[0].rows).map(row => row.cells[0].textContent),
    accuracy: Array.from(table.tBodies[0].rows).map(row => row.cells[header.cellIndex].textContent),
    tables: document.querySelectorAll("table.sortable").length,
    images: Array.from(document.images).map(img => [img.alt, img.complete && img.naturalWidth > 100]),
  };
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(result);
  document.body.append(out);
});
</script>
"""


def test_html_page_in_a_headless_browser(results: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    write_run(results, method="icl", shots=8, seed=1, correct=set(range(7)))  # a second k for the plot's x axis
    code, _, err = report(capsys, results)
    assert code == 0, err
    page = (results / "report" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: works offline
    result = in_headless_browser(page, CHECK_SCRIPT, tmp_path)
    assert result["tables"] == 3
    assert result["methods"] == ["lora", "icl", "icl"]  # sorted by accuracy, descending
    assert result["accuracy"] == ["0.850 ± 0.071", "0.700 ± 0.183", "0.700"]
    assert [alt for alt, _ in result["images"]] == ["accuracy against k, ± one standard deviation over seeds",
                                                    "Fine-tuning minus ICL, with 95% paired-bootstrap intervals"]
    assert all(decoded for _, decoded in result["images"])


def test_calibrated_runs_show_their_uncalibrated_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "calibrated"
    for seed, (calibrated, uncalibrated) in enumerate([(0.8, 0.5), (0.6, 0.5), (0.7, 0.8)], start=1):
        write_run(root, seed=seed, correct=set(range(round(calibrated * 10))), calibration="contextual",
                  ece=0.1 * seed, uncalibrated={"accuracy": uncalibrated, "macro_f1": uncalibrated, "ece": 0.3})
    code, out, err = report(capsys, root)
    assert code == 0, err
    [row] = pd.read_csv(root / "report" / "summary.csv").to_dict("records")
    assert row["calibration"] == "contextual"
    assert row["accuracy_mean"] == pytest.approx(0.7) and row["uncalibrated_accuracy_mean"] == pytest.approx(0.6)
    assert row["uncalibrated_accuracy_std"] == pytest.approx(math.sqrt(((0.1**2) * 2 + 0.2**2) / 2))
    assert row["ece_mean"] == pytest.approx(0.2) and row["uncalibrated_ece_mean"] == pytest.approx(0.3)
    assert "uncalibrated accuracy" in out
