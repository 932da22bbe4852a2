"""Sweeps through Hydra's launchers: a real joblib sweep of the tiny model that resumes, and the SLURM
launcher's config (submitit cannot run without a SLURM cluster: only its composition is checked)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli

SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def _records(output: Path) -> dict[str, int]:
    """Run directory -> metrics.json modification time."""
    return {p.parent.name: p.stat().st_mtime_ns for p in output.glob("*/metrics.json")}


def test_joblib_sweep_resumes_and_reports(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[sweep]'")
    output = tmp_path / "results"
    sweep = ["run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "task=toy", f"model={tiny_model_dir}",
             "method=icl,lora", "shots=2", "seed=1,2", "method.steps=2", f"output_dir={output}"]
    first = run_cli(*sweep, env=harness_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _records(output)
    assert len(before) == 4 and "Joblib" in first.stdout + first.stderr
    cores = len(os.sched_getaffinity(0))
    for path in output.glob("*/metrics.json"):  # two runs side by side: each gets half the cores
        assert json.loads(path.read_text())["environment"]["threads"] == max(1, cores // 2)

    # an interrupted sweep: one run's record is missing; running the sweep again runs that one only
    interrupted = sorted(before)[1]
    shutil.rmtree(output / interrupted)
    second = run_cli("-m", *[arg for arg in sweep if arg != "-m"], env=harness_env, cwd=tmp_path)  # `-m run ...`
    assert second.returncode == 0, second.stderr[-3000:]
    after = _records(output)
    assert set(after) == set(before)
    assert [name for name in after if after[name] != before[name]] == [interrupted]

    done = run_cli("report", str(output), env=harness_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    comparison = pd.read_csv(output / "report" / "comparison.csv")
    assert list(comparison["method"]) == ["lora"] and list(comparison["pairs"]) == [2]
    assert list(comparison["items"]) == [8]  # 2 seeds x 4 toy test items, paired on their ids
    assert "## Fine-tuning vs ICL at equal k" in done.stdout and (output / "report" / "report.html").exists()


def test_submitit_local_sweep_runs_and_reports(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    """The SLURM launcher's code path (Hydra's submitit plugin: pickled jobs, one process each, results
    collected from the submitit folder) run for real with submitit's local executor."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    output = tmp_path / "results"
    done = run_cli("run", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "task=toy",
                   f"model={tiny_model_dir}", "shots=2", "seed=1,2", f"output_dir={output}", env=harness_env,
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LocalLauncher" in done.stdout + done.stderr or "submitit" in done.stdout + done.stderr
    assert len(_records(output)) == 2
    assert list(output.glob(".multirun/*/.submitit/*/*_log.out"))  # each job ran in its own submitit process
    report = run_cli("report", str(output), env=harness_env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    runs = pd.read_csv(output / "report" / "runs.csv")
    assert sorted(runs["seed"]) == [1, 2]


def test_slurm_launcher_config_composes(tmp_path: Path, harness_env: dict) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    done = run_cli("run", "--cfg", "hydra", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.timeout_min=30", env=harness_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert SUBMITIT_SLURM in done.stdout
    for line in ("partition: gpu", "timeout_min: 30", "gpus_per_node: 1", "array_parallelism: 64"):
        assert line in done.stdout


def test_launcher_overrides_pass_the_up_front_check(harness_env: dict) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[sweep]'")
    from harness.cli.configs import register_configs
    from harness.cli.run import _check_overrides
    from harness.errors import HarnessError

    register_configs()
    _check_overrides(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "shots=0,4"], multirun=True)
    _check_overrides(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.mem_gb=32"], multirun=True)
    with pytest.raises(HarnessError, match="unknown hydra/launcher 'slrum'.*pip install"):
        _check_overrides(["hydra/launcher=slrum"], multirun=True)
