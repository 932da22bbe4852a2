"""Task groups: the built-in leaderboard group, `task=<group>` as a multirun over its tasks, broken group files,
and the report's group average by hand and end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.run import _expand_groups
from harness.errors import HarnessError
from harness.inputs.registry import TaskGroup, load_group
from harness.report import tables
from helpers import run_cli


def test_the_leaderboard_group_names_each_benchmark_and_its_leaderboard_metric() -> None:
    group = load_group("leaderboard")
    assert list(group.metrics) == ["arc_easy", "arc_challenge", "hellaswag", "piqa", "copa", "winogrande",
                                   "openbookqa", "sciq", "commonsense_qa", "social_iqa", "mmlu", "lambada_openai"]
    assert group.metrics["hellaswag"] == "acc_norm" and group.metrics["arc_easy"] == "acc"


def test_a_group_stands_for_a_multirun_over_its_tasks() -> None:
    tasks = ",".join(load_group("leaderboard").metrics)
    assert _expand_groups(["task=leaderboard", "shots=0"]) == ["-m", f"task={tasks}", "shots=0"]
    assert _expand_groups(["-m", "task=sst2,leaderboard"]) == ["-m", f"task=sst2,{tasks}"]
    assert _expand_groups(["task=sst2", "shots=0,1"]) == ["task=sst2", "shots=0,1"]  # no group: unchanged


def _root_with_group(tmp_path: Path, text: str, name: str = "mygroup") -> Path:
    (tmp_path / "groups").mkdir(parents=True, exist_ok=True)
    (tmp_path / "groups" / f"{name}.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(("text", "name", "message"), [
    ("tasks: {arc_easy: acc, nosuchtask: acc}\n", "mygroup", "names task 'nosuchtask', which does not exist"),
    ("tasks: {arc_easy: macro_f1}\n", "mygroup", "averages macro_f1 of task 'arc_easy', which records acc, acc_norm"),
    ("tasks: [arc_easy]\n", "mygroup", "must hold `tasks`"),
    ("tasks: {arc_easy: acc}\n", "sst2", "has the name of a task"),
])
def test_a_broken_group_file_is_named_with_its_problem(text: str, name: str, message: str, tmp_path: Path,
                                                       monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(_root_with_group(tmp_path, text, name)))
    with pytest.raises(HarnessError, match=message):
        load_group(name)


def test_the_group_average_by_hand() -> None:
    """Each task counts once with the metric the group names for it, whatever metric the report ranks by (t3 is
    a short-answer task: exact_match only); an entry missing a task gets none."""
    nan = float("nan")
    rows = [("a", "t1", 0.5, 0.6, nan), ("a", "t2", 0.2, 0.4, nan), ("a", "t3", nan, nan, 0.3),
            ("b", "t1", 0.7, 0.1, nan)]
    summary = pd.DataFrame([{"model": model, "task": task, "acc_mean": acc, "acc_norm_mean": norm,
                             "exact_match_mean": match} for model, task, acc, norm, match in rows])
    groups = [TaskGroup("pair", "", {"t1": "acc", "t2": "acc_norm"}), TaskGroup("qa", "", {"t1": "acc", "t3": "exact_match"})]
    board = tables.leaderboard(summary, ["task", "model"], "acc", groups).set_index("model")
    assert board.at["a", "pair average"] == pytest.approx((0.5 + 0.4) / 2)
    assert board.at["a", "qa average"] == pytest.approx((0.5 + 0.3) / 2)
    assert pd.isna(board.at["b", "pair average"]) and pd.isna(board.at["b", "qa average"])


def test_a_group_run_and_its_report(tmp_path: Path, harness_env: dict, tiny_model_dir: Path, task_root: Path) -> None:
    """`run task=<group>` runs every task of it; the report's leaderboard shows the group's average."""
    root = _root_with_group(tmp_path / "root", "tasks: {toy: accuracy, toy2: macro_f1}\n", "toys")
    (root / "tasks").mkdir()
    (root / "tasks" / "toy2.yaml").write_text((task_root / "tasks" / "toy.yaml").read_text().replace("name: toy",
                                                                                                     "name: toy2"))
    (root / "prompts" / "toy2").mkdir(parents=True)
    (root / "prompts" / "toy2" / "plain.yaml").write_text((task_root / "prompts" / "toy" / "plain.yaml").read_text())
    env = {**harness_env, "HARNESS_PATH": f"{root}:{task_root}"}
    out = tmp_path / "results"
    done = run_cli("run", "task=toys", f"model={tiny_model_dir}", "shots=1", f"output_dir={out}", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = {json.loads(path.read_text())["task"]: json.loads(path.read_text())["metrics"]
               for path in out.glob("*/metrics.json")}
    assert set(records) == {"toy", "toy2"}
    done = run_cli("report", str(out), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [row] = pd.read_csv(out / "report" / "leaderboard.csv").to_dict("records")
    assert row["toys average"] == pytest.approx((records["toy"]["accuracy"] + records["toy2"]["macro_f1"]) / 2)
    assert "toys average" in done.stdout
