"""Data-parallel runs: `accelerate launch` with 2 CPU processes (gloo) writes the record one process writes."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from harness.runs.distributed import Processes
from harness.runs.launch import launch_command
from helpers import read_record, run_cli, write_long_task

TOLERANCE = 1e-5


def test_blocks_cover_the_items_in_order() -> None:
    for items in (0, 1, 5, 7, 100):
        for count in (1, 2, 3, 8):
            blocks = [list(range(items))[Processes(index, count).shard(items)] for index in range(count)]
            assert [item for block in blocks for item in block] == list(range(items))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def _runs(output: Path) -> dict[str, Path]:
    """Method -> run directory."""
    return {path.parent.name.split("__")[2]: path.parent for path in output.glob("*/metrics.json")}


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _max_difference(left: object, right: object) -> float:
    """The largest |difference| between the numbers of two equally shaped JSON values (inf if shapes differ)."""
    if isinstance(left, dict) and isinstance(right, dict):
        if left.keys() != right.keys():
            return math.inf
        return max((_max_difference(left[key], right[key]) for key in left), default=0.0)
    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            return math.inf
        return max((_max_difference(a, b) for a, b in zip(left, right)), default=0.0)
    if isinstance(left, float) or isinstance(right, float):
        return abs(left - right)
    return 0.0 if left == right else math.inf


def test_two_processes_write_the_record_one_process_writes(tmp_path: Path, harness_env: dict,
                                                           tiny_model_dir: Path) -> None:
    """ICL with contextual calibration and a fine-tuning run (trained once, on the main process), as one sweep."""
    pytest.importorskip("accelerate")
    common = ["-m", "task=toy", f"model={tiny_model_dir}", "shots=4", "calibration=contextual", "method=icl,bitfit"]
    single = run_cli("run", *common, f"output_dir={tmp_path / 'one'}", env=harness_env, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    # --processes 2 writes the accelerate launch command (the resume test below types it)
    launched = run_cli("run", "--processes", "2", *common, f"output_dir={tmp_path / 'two'}", env=harness_env,
                       cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "accelerate.commands.launch --multi_gpu --num_processes 2" in launched.stderr
    assert launched.stdout.count("run record:") == 2  # the main process prints; the other one does not

    one, two = _runs(tmp_path / "one"), _runs(tmp_path / "two")
    assert set(one) == set(two) and len(one) == 2
    for name in one:
        assert one[name].name == two[name].name  # the same run key: the same run
        rows_one, rows_two = _rows(one[name]), _rows(two[name])
        assert [(r["id"], r["prediction"], r["demo_ids"]) for r in rows_one] == \
               [(r["id"], r["prediction"], r["demo_ids"]) for r in rows_two]
        assert _max_difference([r["scores"] for r in rows_one], [r["scores"] for r in rows_two]) <= TOLERANCE
        record_one, record_two = read_record(one[name]), read_record(two[name])
        assert _max_difference(record_one.metrics, record_two.metrics) <= TOLERANCE
        assert _max_difference(record_one.calibration_scores, record_two.calibration_scores) <= TOLERANCE
        # per test item the same; in all, what the processes ran: each scores the calibration prompts itself
        assert record_one.cost.inference_tokens_per_example == record_two.cost.inference_tokens_per_example
        assert record_two.cost.tokens_scored > record_one.cost.tokens_scored
        assert (record_one.environment["processes"], record_two.environment["processes"]) == (1, 2)
        assert record_one.train_ids == record_two.train_ids
        assert not list(two[name].glob("journal*"))  # every process's journal removed with the record
    assert read_record(two["bitfit"]).training.steps == read_record(one["bitfit"]).training.steps


def test_a_model_split_between_memory_and_disk_scores_as_a_whole_one(tmp_path: Path, harness_env: dict,
                                                                       tiny_llama_dir: Path) -> None:
    """model.device_map=auto with a CPU memory budget smaller than the model: accelerate keeps some layers on
    disk and loads them for each forward pass (the most a machine without GPUs can split a model); the prefix
    cache and the scorer give the numbers of the model in one piece, under the same run key."""
    from harness.engine.hf.loading import load_backend
    from helpers import compose, run_in_process

    placement = ["model.device_map=auto", "model.max_memory={cpu: 300KB}", f"model.offload_folder={tmp_path / 'off'}"]
    split = load_backend(compose(f"model={tiny_llama_dir}", *placement).model, "auto")
    assert {"cpu", "disk"} <= set(split.model.hf_device_map.values())  # really split
    common = ["task=toy", f"model={tiny_llama_dir}", "shots=4", "prefix_cache=true"]
    whole = run_in_process(*common, f"output_dir={tmp_path / 'whole'}")
    parts = run_in_process(*common, *placement, f"output_dir={tmp_path / 'split'}")
    assert whole.run_dir.name == parts.run_dir.name and not parts.reused
    rows_whole, rows_split = _rows(whole.run_dir), _rows(parts.run_dir)
    assert [r["prediction"] for r in rows_whole] == [r["prediction"] for r in rows_split]
    assert _max_difference([r["scores"] for r in rows_whole], [r["scores"] for r in rows_split]) <= TOLERANCE


@pytest.mark.parametrize("overrides, message", [
    (["model.max_memory={cpu: 1GB}"], "apply with model.device_map"),
    (["model.device_map=auto", "device=cpu"], "leave device=auto"),
    (["model.device_map=auto", "model.offload_folder=off", "method=bitfit"], "cannot train weights offloaded"),
    (["model.device_map=everywhere"], "everywhere"),
])
def test_placement_mistakes_fail_in_one_line(tmp_path: Path, harness_env: dict, tiny_model_dir: Path,
                                            overrides: list[str], message: str) -> None:
    done = run_cli("run", "task=toy", f"model={tiny_model_dir}", "shots=2", *overrides,
                   f"output_dir={tmp_path}", env=harness_env, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line, no traceback


def test_a_split_model_is_refused_under_accelerate_launch(harness_env: dict, tiny_model_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import HarnessError
    from harness.runs.plan import plan_run
    from helpers import compose

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(HarnessError, match="use one or the other"):
        plan_run(compose("task=toy", f"model={tiny_model_dir}", "model.device_map=auto"))


def test_a_killed_split_run_resumes_each_block(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    """Each process journals its block; killed midway and started again with as many processes, each block
    continues where it stopped, and the record is the uninterrupted run's."""
    env = {**harness_env, "HARNESS_PATH": str(write_long_task(tmp_path / "root"))}
    settings = ["task=long", f"model={tiny_model_dir}", "shots=2", "batch_size=2"]
    output = tmp_path / "stopped"
    def split_run() -> list[str]:  # each launch meets on a port of its own
        return [*launch_command(2, threads=1), "-m", "harness", "run", *settings, f"output_dir={output}"]

    launcher = subprocess.Popen(split_run(), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def partway() -> bool:  # both processes have journaled 30 batches of their block
        journals = list(output.glob("*/journal.*-of-2.jsonl"))
        return len(journals) == 2 and all(len(path.read_text().splitlines()) > 30 for path in journals)

    deadline = time.monotonic() + 300
    while not partway():
        assert launcher.poll() is None and time.monotonic() < deadline, "the split run did not get going"
        time.sleep(0.05)
    # the launcher and both processes at once, as a lost node would (torchrun's workers leave its process group)
    for process in [*psutil.Process(launcher.pid).children(recursive=True), psutil.Process(launcher.pid)]:
        process.kill()
    launcher.wait(timeout=60)
    assert not list(output.glob("*/metrics.json"))
    resumed = subprocess.run(split_run(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("finished by an earlier, interrupted process") == 2  # both blocks resumed
    [run_dir] = [path.parent for path in output.glob("*/metrics.json")]
    record = read_record(run_dir)
    assert record.cost.examples_resumed >= 60 and record.n == 700
    assert not list(run_dir.glob("journal*"))
    single = run_cli("run", *settings, f"output_dir={tmp_path / 'single'}", env=env, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    [reference] = [path.parent for path in (tmp_path / "single").glob("*/metrics.json")]
    assert reference.name == run_dir.name
    rows, reference_rows = _rows(run_dir), _rows(reference)
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in reference_rows]
    assert _max_difference([r["scores"] for r in rows], [r["scores"] for r in reference_rows]) <= TOLERANCE
