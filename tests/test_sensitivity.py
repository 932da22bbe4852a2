"""`python -m harness sensitivity`: the design, the dry run, a real study on the tiny model that a second call
reuses entirely, and its section in the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli.sensitivity import orders, parse_arguments
from harness.errors import HarnessError
from harness.runs.records import Inputs, run_key
from harness.runs.study import Source, Study
from helpers import run_cli


def _records(output: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in output.glob("*/metrics.json")}


def test_study_runs_once_then_reuses_every_record_and_reports(tmp_path: Path, harness_env: dict,
                                                              tiny_model_dir: Path) -> None:
    output = tmp_path / "results"
    study = ["sensitivity", "task=toy", f"model={tiny_model_dir}", "shots=2", "sets=2", "train_seeds=2",
             "vary=set,order,train_seed,calibration", "methods=icl,lora", "method.steps=2", f"output_dir={output}"]
    planned = run_cli(*study, "--dry-run", env=harness_env, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert "icl: 4 runs (2 sets x 2 orders (within each set)); 0 recorded already, 4 to run" in planned.stdout
    assert "lora: 4 runs (2 sets x 2 train_seeds); 0 recorded already, 4 to run" in planned.stdout
    assert "no estimate for icl, lora" in planned.stdout
    assert not output.exists() or not _records(output)  # a dry run runs nothing

    first = run_cli(*study, env=harness_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _records(output)
    assert len(before) == 8  # calibration needs no runs of its own: both conditions come from the same scores
    assert first.stderr.count("reused from the previous run of this process") == 3  # icl's 4 runs: one load
    assert "of the variance of 2-shot icl on toy" in first.stdout
    assert "lora - icl:" in first.stdout and "lora - icl, contextual calibration:" in first.stdout

    again = run_cli(*study, env=harness_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "icl: 4 runs (2 sets x 2 orders (within each set)); 4 recorded already, 0 to run" in again.stdout
    assert "about" not in again.stdout.split("planned:")[0]  # nothing to estimate
    assert _records(output) == before  # not one record written again
    assert "Launching" not in again.stdout + again.stderr  # no multirun at all

    # one run lost: the plan runs only it, and estimates it from the study's finished runs
    lost = sorted(output.glob("*__icl__*"))[0]
    shutil.rmtree(lost)
    planned = run_cli(*study, "--dry-run", env=harness_env, cwd=tmp_path)
    assert "icl: 4 runs (2 sets x 2 orders (within each set)); 3 recorded already, 1 to run" in planned.stdout
    assert "median" in planned.stdout and "over 3 finished icl runs of this task, model and k" in planned.stdout
    rerun = run_cli(*study, env=harness_env, cwd=tmp_path)
    assert rerun.returncode == 0 and "(1 run made, 7 reused" in rerun.stdout, rerun.stderr[-3000:]

    path = next((output / "studies").glob("*.json"))
    record = Study.from_json(path.read_text())
    assert [c.name for c in record.conditions] == ["icl", "icl, contextual calibration", "lora",
                                                   "lora, contextual calibration"]
    icl = record.conditions[0]
    assert [f.name for f in icl.factors] == ["set", "order"] and icl.factors[1].levels == ["[0,1]", "[1,0]"]
    orders_seen = {}
    for cell in icl.cells:  # each cell is the run of its configuration: its demonstrations in its order
        demo_ids = json.loads(Path(cell.run_dir, "metrics.json").read_text())["demo_ids"]
        orders_seen.setdefault(cell.levels[0], []).append(demo_ids)
    for first_order, second_order in orders_seen.values():
        assert second_order == first_order[::-1]

    report = run_cli("report", str(output), env=harness_env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "## Sensitivity: " in report.stdout and "order share" in report.stdout and "item sampling share" in report.stdout
    assert "## Order spread per demonstration set" in report.stdout
    assert "## What calibration removes" in report.stdout and "standard deviation by source: set " in first.stdout
    assert "## Fine-tuning vs ICL across configurations" in report.stdout
    page = (output / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 + 3  # shares, strip plot, a heat map per icl condition


@pytest.mark.parametrize(("arguments", "message"), [
    (["seed=3"], "seed is set by the study"),
    (["vary=order,colour"], "bad vary=order,colour"),
    (["sets=0"], "bad sets=0"),
    (["-m"], "unknown flag '-m'"),
    (["shots=2,4"], "several values"),
])
def test_bad_study_arguments_fail_in_one_line(arguments: list[str], message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        parse_arguments(arguments)


@pytest.mark.parametrize(("arguments", "message"), [
    (["shots=1", "vary=order"], "vary=order needs at least 2 shots"),
    (["vary=label_words"], "template 'plain' of task 'toy' has no label_words"),
    (["vary=template,label_words"], "label words belong to one template"),
    (["methods=lora", "vary=order"], "nothing in vary=order varies for method=lora"),
])
def test_design_errors_are_one_line(arguments: list[str], message: str, tmp_path: Path, harness_env: dict,
                                    tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.__main__ import main

    code = main(["sensitivity", "task=toy", f"model={tiny_model_dir}", "shots=2", *arguments, "--dry-run",
                 f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_orders_are_all_permutations_up_to_four_then_a_fixed_sample() -> None:
    assert len(orders(4, None)) == 24 and orders(3, None)[0] == (0, 1, 2)
    assert len(orders(3, 100)) == 6
    sample = orders(8, None)
    assert len(sample) == 24 == len(set(sample)) and sample == orders(8, None)  # seeded: the same each time
    assert all(sorted(p) == list(range(8)) for p in sample)
    assert orders(8, 5) == sample[:5]


def test_new_settings_at_their_default_leave_run_keys_unchanged() -> None:
    """train_seed and label_words came after records existed: at their default, the key is what it was."""
    config = {"task": {"name": "t"}, "model": {"name": "m"}, "shots": 4, "seed": 1}
    digest = Inputs(task_file=None, template_file="a", eval_data="b", demo_data=None, model="c")
    before = run_key(config, digest)
    assert run_key({**config, "train_seed": None, "label_words": None}, digest) == before
    assert run_key({**config, "train_seed": 2}, digest) != before
    assert run_key({**config, "label_words": "bad_good"}, digest) != before


def test_sources_have_phrases() -> None:
    from harness.runs.study import PHRASES

    assert set(PHRASES) == {source.value for source in Source} - {"calibration"}


def test_train_seed_changes_training_but_not_the_training_set(tmp_path: Path, harness_env: dict,
                                                               tiny_model_dir: Path) -> None:
    from helpers import run_in_process

    common = ["task=toy", f"model={tiny_model_dir}", "method=lora", "shots=4", "method.steps=3",
              f"output_dir={tmp_path}"]
    default = run_in_process(*common).record
    same = run_in_process(*common, "train_seed=1")  # the seed's own value: the plain run, answered from its record
    assert same.reused and same.record == default
    other = run_in_process(*common, "train_seed=2").record
    other_set = run_in_process(*common, "seed=2", "train_seed=1").record
    assert other.train_ids == default.train_ids and other.training.losses != default.training.losses
    assert other_set.train_ids != default.train_ids


def test_what_the_study_does_not_vary_may_be_set() -> None:
    options = parse_arguments(["vary=label_words", "template=it_was", "seed=3", "calibration=contextual",
                               "content_free_inputs=[N/A,'']"])
    assert options.overrides == ["template=it_was", "seed=3", "calibration=contextual", "content_free_inputs=[N/A,'']"]
    with pytest.raises(HarnessError, match="calibration is set by the study"):
        parse_arguments(["vary=set,calibration", "calibration=pmi"])
    with pytest.raises(HarnessError, match="template is set by the study"):
        parse_arguments(["vary=template", "template=it_was"])
