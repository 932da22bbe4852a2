"""Installed as a wheel, not from the checkout: the built-in plugins (the repository's top-level tasks/, prompts/ and
groups/) and the configs travel inside it, and the installed harness finds them from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import REPO


def test_the_wheel_carries_tasks_templates_and_configs_and_runs_from_anywhere(tmp_path: Path, harness_env: dict,
                                                                               tiny_model_dir: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info into the tree it builds
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "results", "build", "dist", "*.egg-info",
                                                                 "__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp_path / "dist").glob("icl_harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("tasks", "prompts", "groups"):  # the root's plugins, every file, in the package's plugins/
        shipped = {n.removeprefix("harness/plugins/") for n in names if n.startswith(f"harness/plugins/{folder}/")}
        assert shipped == {str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*.yaml")}, folder
        assert shipped
    assert "harness/conf/config.yaml" in names and "harness/conf/model/smollm2-135m.yaml" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "harness = harness.__main__:entry" in entry_points
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"  # neither the checkout nor its parent
    elsewhere.mkdir()
    env = {**harness_env, "PYTHONPATH": str(site)}
    env.pop("HARNESS_PATH")
    where = subprocess.run([sys.executable, "-c", "import harness; print(harness.__file__)"], env=env, cwd=elsewhere,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr  # the wheel's copy, not the checkout
    listed = subprocess.run([sys.executable, "-m", "harness", "list"], env=env, cwd=elsewhere, capture_output=True,
                            text=True)
    assert listed.returncode == 0 and "sst2" in listed.stdout and "review*" in listed.stdout, listed.stderr
    data = elsewhere / "data"
    data.mkdir()
    (data / "validation.jsonl").write_text('{"sentence": "a fine film", "label": 1}\n{"sentence": "dull", "label": 0}\n')
    done = subprocess.run([sys.executable, "-m", "harness", "run", "task=sst2", f"task.data_dir={data}",
                           "task.files.splits={validation: validation.jsonl}", f"model={tiny_model_dir}"],
                          env=env, cwd=elsewhere, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((elsewhere / "results").glob("sst2__tiny-gpt2__icl__0shot__seed1__*/metrics.json"))) == 1
    assert os.access(site / "harness" / "plugins" / "prompts" / "sst2" / "review.yaml", os.R_OK)
