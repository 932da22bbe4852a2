"""lm-evaluation-harness's results layout: runs written in it (lmeval_results=true), and files written by
lm-evaluation-harness 0.4.13 read by the report, beside the harness's runs on the leaderboard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.report.lmeval_import import find_results_files, load_samples, read_results_file
from harness.report.load import load_records
from helpers import REPO, report, run_in_process, write_run

# written by lm-evaluation-harness 0.4.13 (benchmarks/lmeval_files.py): SmolLM2-135M-Instruct on 10 COPA items
LMEVAL_FILES = REPO / "tests" / "data" / "lmeval-0.4.13"


def test_a_run_written_in_the_lmeval_layout_reads_back_the_same(tiny_model_dir: Path, tmp_path: Path,
                                                                 harness_env: dict) -> None:
    result = run_in_process("task=toy", f"model={tiny_model_dir}", "shots=2", "lmeval_results=true",
                            f"output_dir={tmp_path}")
    [results_file] = (result.run_dir / "lm-eval").glob("results_*.json")
    payload = json.loads(results_file.read_text())
    reference = json.loads(next(LMEVAL_FILES.rglob("results_*.json")).read_text())
    shared = {"results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config",
              "date", "model_name", "model_name_sanitized", "total_evaluation_time_seconds", "transformers_version"}
    assert shared <= set(reference) and shared <= set(payload)
    assert payload["results"]["toy"]["acc,none"] == result.record.metrics["accuracy"]
    assert payload["results"]["toy"]["f1,none"] == result.record.metrics["macro_f1"]
    assert payload["n-shot"] == {"toy": 2} and payload["n-samples"]["toy"]["effective"] == result.record.n
    [row] = read_results_file(results_file)
    assert row["metrics"]["accuracy"] == result.record.metrics["accuracy"] and row["shots"] == 2  # toy classifies
    samples = [json.loads(line) for line in next((result.run_dir / "lm-eval").glob("samples_toy_*.jsonl")).open()]
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").open()]
    assert len(samples) == len(predictions) == result.record.n
    assert [s["acc"] for s in samples] == [float(p["prediction"] == p["gold"]) for p in predictions]
    assert set(reference_sample_keys()) - {"arguments", "prompt_hash"} <= set(samples[0])
    assert payload["transformers_version"] == result.record.environment["versions"]["transformers"]
    # files inside a run directory repeat its record: the report does not read them a second time
    assert find_results_files(tmp_path) == []
    # the same command again: nothing is scored, the files are written anew
    again = run_in_process("task=toy", f"model={tiny_model_dir}", "shots=2", "lmeval_results=true",
                           f"output_dir={tmp_path}")
    assert again.reused and len(list((result.run_dir / "lm-eval").glob("results_*.json"))) == 1


def reference_sample_keys() -> list[str]:
    return list(json.loads(next(LMEVAL_FILES.rglob("samples_*.jsonl")).read_text().splitlines()[0]))


def test_lmeval_files_sit_beside_the_runs_on_the_leaderboard(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    for model, right in (("a", set(range(8))), ("b", set(range(3)))):
        write_run(results, task="copa", model=model, shots=5, correct=right, metric="acc")
    shutil.copytree(LMEVAL_FILES, results / "from-lm-eval")
    [row] = read_results_file(next((results / "from-lm-eval").rglob("results_*.json")))
    assert row["model"] == "smollm2-135m (lm-eval 0.4.13)" and row["task"] == "copa" and row["shots"] == 5
    assert row["n"] == 10 and row["template"] == "lm-eval"
    records = load_records(results)
    imported = records.runs[records.runs["template"] == "lm-eval"]
    assert len(records.runs) == 3 and imported["acc"].iloc[0] == row["metrics"]["acc"]
    samples = load_samples(imported["run_dir"].iloc[0], "acc")
    assert len(samples) == 10 and (samples["prediction"] == "right").mean() == pytest.approx(row["metrics"]["acc"])
    code, out, _ = report(capsys, str(results))
    assert code == 0 and "## Leaderboard across models, 5-shot" in out
    board = out.split("## Leaderboard across models, 5-shot")[1].split("\n## ")[0]
    lm_eval_row = next(line for line in board.splitlines() if "(lm-eval 0.4.13)" in line)
    # the file times its one task; tokens and memory are not in it
    seconds = float(json.loads(next(LMEVAL_FILES.glob("results_*.json")).read_text())["total_evaluation_time_seconds"])
    assert lm_eval_row.endswith(f"| {seconds:.1f} | - | - |")
    # no item pairs the file's (numbered) with the runs' (named): the three are ordered by their scores
    assert [line.split(" | ")[1] for line in board.splitlines() if line.startswith("| ") and "---" not in line][1:] == [
        "a", "smollm2-135m (lm-eval 0.4.13)", "b"]


def test_lmeval_option_and_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    write_run(results, task="copa", model="a", shots=5, correct={1, 2}, metric="acc")
    (results / "stray").mkdir()
    (results / "stray" / "results_x.json").write_text('{"something": "else"}')
    code, out, err = report(capsys, str(results), f"lmeval={LMEVAL_FILES}")
    assert code == 0 and "smollm2-135m (lm-eval 0.4.13)" in out
    assert "note: 1 task read from lm-evaluation-harness results files" in err
    assert "results_x.json: not an lm-evaluation-harness results file" in err
    code, _, err = report(capsys, str(results), f"lmeval={tmp_path / 'absent'}")
    assert code != 0 and "do not exist" in err


def test_a_perplexity_run_is_exported_as_rolling_log_likelihood_and_lower_is_better(tmp_path: Path, harness_env: dict,
                                                                                   tiny_llama_dir: Path, monkeypatch):
    """Two lists that had drifted apart (issue 24): word_perplexity and byte_perplexity were written as
    higher-is-better, and a perplexity run as multiple_choice. Both now come from the registries."""
    from helpers import write_documents_task

    monkeypatch.setenv("HARNESS_PATH", str(write_documents_task(tmp_path)))
    result = run_in_process("task=docs", f"model={tiny_llama_dir}", "model.max_length=12", "lmeval_results=true",
                            f"output_dir={tmp_path / 'out'}")
    [results_file] = (result.run_dir / "lm-eval").glob("results_*.json")
    exported = json.loads(results_file.read_text())
    assert exported["configs"]["docs"]["output_type"] == "loglikelihood_rolling"
    assert exported["higher_is_better"]["docs"] == {"word_perplexity": False, "byte_perplexity": False,
                                                    "bits_per_byte": False}
    assert all(not entry["higher_is_better"] for entry in exported["configs"]["docs"]["metric_list"])
    assert exported["results"]["docs"]["word_perplexity,none"] == result.record.metrics["word_perplexity"]
