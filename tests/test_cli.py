"""The command line as a user runs it: records on disk, reproducibility, sweeps, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import compose, read_record, run_cli, run_in_process


def _run(tmp_path: Path, env: dict, model: Path, *overrides: str, output: str = "out"):
    return run_cli("run", "task=toy", f"model={model}", f"output_dir={tmp_path / output}", *overrides,
                   env=env, cwd=tmp_path)


def _only_run_dir(output: Path) -> Path:
    [run_dir] = [p for p in output.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def test_run_writes_every_file(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    done = _run(tmp_path, harness_env, tiny_model_dir, "shots=2", "seed=7", "batch_size=3")
    assert done.returncode == 0, done.stderr
    run_dir = _only_run_dir(tmp_path / "out")
    assert run_dir.name.startswith("toy__tiny-gpt2__icl__2shot__seed7__")
    assert {p.name for p in run_dir.iterdir()} == {"config.yaml", "metrics.json", "predictions.jsonl"}
    record = read_record(run_dir)
    assert set(record.metrics) == {"accuracy", "macro_f1", "ece"} and record.cost.tokens_scored_per_s > 0
    assert record.environment["device"] == "cpu" and {"versions", "git_commit"} <= set(record.environment)
    assert record.n == 4 and len(record.demo_ids) == 2 and record.cost.examples_resumed == 0
    assert run_dir.name.endswith(record.run_key) and record.inputs.template_file and record.inputs.model
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == ["te0", "te1", "te2", "te3"]
    assert all(set(row["scores"]) == {"neg", "pos"} and row["demo_ids"] == record.demo_ids for row in rows)
    assert sum(row["prediction"] == row["gold"] for row in rows) / 4 == record.metrics["accuracy"]
    assert "accuracy" in done.stdout and str(run_dir.name) in done.stdout
    assert not list(run_dir.glob("*.partial"))


def test_same_seed_same_demonstrations_and_predictions(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    runs = {}
    for output, batch_size in (("a", 1), ("b", 8)):
        result = run_in_process("task=toy", f"model={tiny_model_dir}", "shots=3", "seed=5", f"batch_size={batch_size}",
                                f"output_dir={tmp_path / output}")
        runs[output] = (result.run_dir.name, [json.loads(line) for line in (result.run_dir / "predictions.jsonl").open()])
    (name_a, rows_a), (name_b, rows_b) = runs["a"], runs["b"]
    assert name_a == name_b  # batch size does not enter the run key
    for row_a, row_b in zip(rows_a, rows_b):
        assert row_a["demo_ids"] == row_b["demo_ids"] and row_a["prediction"] == row_b["prediction"]
        for label in row_a["scores"]:
            assert row_a["scores"][label] == pytest.approx(row_b["scores"][label], abs=1e-4)


def test_multirun_sweep_writes_one_record_per_job(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    done = _run(tmp_path, harness_env, tiny_model_dir, "-m", "shots=0,1", "seed=1,2")
    assert done.returncode == 0, done.stderr
    names = sorted(p.name.rsplit("__", 1)[0] for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert names == ["toy__tiny-gpt2__icl__0shot__seed1", "toy__tiny-gpt2__icl__0shot__seed2",
                     "toy__tiny-gpt2__icl__1shot__seed1", "toy__tiny-gpt2__icl__1shot__seed2"]


def test_a_complete_run_is_not_run_again(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    settings = ["task=toy", f"model={tiny_model_dir}", "shots=1", f"output_dir={tmp_path / 'out'}"]
    first = run_in_process(*settings)
    metrics = first.run_dir / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    again = run_cli("run", *settings, "batch_size=2", env=harness_env, cwd=tmp_path)  # same run key
    assert again.returncode == 0 and "complete already" in again.stdout, again.stderr
    assert metrics.stat().st_mtime_ns == stamp and "scoring" not in again.stderr
    forced = run_in_process(*settings, "rerun=true")
    assert not forced.reused and metrics.stat().st_mtime_ns != stamp


def test_subsample_scores_the_same_items_for_every_seed(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    done = _run(tmp_path, harness_env, tiny_model_dir, "-m", "subsample=3", "seed=1,2", "shots=1")
    assert done.returncode == 0, done.stderr
    ids = [[json.loads(line)["id"] for line in path.open()] for path in sorted((tmp_path / "out").glob("*/predictions.jsonl"))]
    assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0]) == 3 and set(ids[0]) <= {"te0", "te1", "te2", "te3"}


def test_list_and_help(tmp_path: Path, harness_env: dict) -> None:
    listed = run_cli("list", env=harness_env, cwd=tmp_path)
    assert listed.returncode == 0 and "toy" in listed.stdout and "smollm2-135m" in listed.stdout
    assert "plain*" in listed.stdout
    helped = run_cli("--help", env=harness_env, cwd=tmp_path)
    assert helped.returncode == 0 and "run" in helped.stdout
    run_help = run_cli("run", "--help", env=harness_env, cwd=tmp_path)
    assert run_help.returncode == 0 and "task: " in run_help.stdout


BAD_INPUTS = {
    "unknown task": (["task=nope"], "unknown task 'nope'"),
    "unknown template": (["template=nope"], "unknown template 'nope'"),
    "unknown model path": (["model=./no/such/model"], "model path not found"),
    "unknown config key": (["colour=blue"], "Key 'colour' not in"),
    "bad value type": (["shots=many"], "could not be converted to Integer"),
    "missing field": (["template=missing_field"], "uses field(s) ['title']"),
    "empty verbalizer": (["template=empty_verbalizer"], "empty verbalizer"),
    "too many shots": (["shots=13"], "pool holds only 12"),
    "missing data file": (["task.files.splits.test=nope.jsonl"], "data file not found"),
    "unknown method": (["method=nope"], "unknown method 'nope'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_nonzero_exit(case: str, tmp_path: Path, harness_env: dict,
                                                   tiny_model_dir: Path) -> None:
    overrides, message = BAD_INPUTS[case]
    arguments = ["run", "task=toy", f"output_dir={tmp_path / 'out'}"]
    if not any(o.startswith("model=") for o in overrides):
        arguments.append(f"model={tiny_model_dir}")
    done = run_cli(*arguments, *overrides, env=harness_env, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unreadable_data_file(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.jsonl").write_text('{"text": "a", "label": 1}\n')
    (broken / "test.jsonl").write_text("this is not json\n")
    done = _run(tmp_path, harness_env, tiny_model_dir, f"task.data_dir={broken}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: cannot load dataset" in done.stderr


def test_hub_id_while_offline_fails_fast(tmp_path: Path, harness_env: dict) -> None:
    env = {**harness_env, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    env.pop("HF_HUB_OFFLINE")
    done = run_cli("run", "task=toy", "model=some-org/some-model", f"output_dir={tmp_path}", env=env, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: model 'some-org/some-model' must come from the Hugging Face hub, which cannot be reached" in done.stderr
    offline = run_cli("run", "task=toy", "model=some-org/some-model", f"output_dir={tmp_path}", env=harness_env,
                      cwd=tmp_path)
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert ("error: model 'some-org/some-model' is not available locally and HF_HUB_OFFLINE=1 forbids downloading it"
            in offline.stderr)


def test_hub_dataset_while_offline_fails_fast(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    env = {**harness_env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE")
    done = run_cli("run", "task=sst2", "task.source=hub", f"model={tiny_model_dir}", f"output_dir={tmp_path}", env=env,
                   cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: dataset 'nyu-mll/glue' must come from the Hugging Face hub" in done.stderr


def test_a_broken_task_file_fails_only_its_own_runs(tmp_path: Path, harness_env: dict) -> None:
    root = tmp_path / "root"
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "broken.yaml").write_text("name: broken\nfields: [text]\nlabels: {a: A}\ncolour: red\n")
    env = {**harness_env, "HARNESS_PATH": f"{root}:{harness_env['HARNESS_PATH']}"}
    done = run_cli("run", "task=broken", env=env, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "colour" in done.stderr
    done = run_cli("run", "task=toy", "--cfg", "job", env=env, cwd=tmp_path)  # the other tasks still compose
    assert done.returncode == 0 and "name: toy" in done.stdout, done.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, harness_env: dict) -> None:
    import subprocess
    import sys

    with subprocess.Popen([sys.executable, "-m", "harness", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=harness_env, cwd=tmp_path, bufsize=0) as process:
        process.stdout.close()  # like `| head -0`: the reader is gone before anything is written
        stderr = process.stderr.read().decode()
    assert "Traceback" not in stderr and process.returncode == 1, stderr


@pytest.mark.parametrize("daemon", [True, False])
def test_exit_without_teardown_runs_exit_handlers_and_delivers_output(tmp_path: Path, daemon: bool) -> None:
    """The CLI's fast exit keeps what a normal exit guarantees: exit handlers, buffered output, the exit
    status, and (for a non-daemon thread still running) waiting for that thread."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # output must be buffered
    script = tmp_path / "ending.py"
    script.write_text(f"""
import atexit, sys, threading, time
from harness.__main__ import exit_without_teardown
atexit.register(lambda: open({str(tmp_path / "handler_ran")!r}, "w").close())
thread = threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished")), daemon={daemon})
thread.start()
print("buffered", end="")  # no newline: stays in the buffer until flushed
exit_without_teardown(3)
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "handler_ran").exists()
    assert done.stdout.startswith("buffered")
    assert ("thread finished" in done.stdout) is not daemon  # a daemon thread dies with the process, as usual

    script.write_text("from harness.__main__ import exit_without_teardown\nexit_without_teardown('bad input')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and done.stderr.strip() == "bad input"


@pytest.mark.parametrize(("overrides", "key"), [
    (["task=sentiment", "shots=4"], "d7f8408375"),
    (["task=arc_easy", "model.dtype=float32"], "a665659c36"),
    (["task=sentiment", "method=lora"], "9e7b833df3"),
])
def test_settings_added_since_leave_earlier_run_keys_alone(harness_env: dict, overrides: list[str], key: str) -> None:
    """Settings added after records existed (train_seed, label_words, task.units_field, the model's placement)
    stay out of the key at their default: these are the keys commit 800a7f3 computed for the same configs and
    inputs, so no record made before them is orphaned."""
    from omegaconf import OmegaConf

    from harness.runs.records import Inputs, run_key

    resolved = OmegaConf.to_container(OmegaConf.structured(compose(*overrides)), resolve=True, enum_to_str=True)
    inputs = Inputs(task_file=None, template_file="a", eval_data="b", demo_data=None, model="c")
    assert run_key(resolved, inputs) == key
