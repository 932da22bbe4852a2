"""The fault probe of issue 30 kept as regression tests: what a hostile or careless user can do to records, task
files, templates, model paths and caches. Every case ends in a verified result or in one `error:` line with a
non-zero exit, quickly; none reuses, prints or exports a damaged record.

(The probe's other passing cases live beside the code they test: kills and Ctrl-C mid-run, damaged caches and
edited inputs in test_reliability.py, escaping in report.html in test_report.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.inputs.expressions import ENVIRONMENT, compile_expression
from harness.runs.records import RecordError, read_run
from helpers import one_error_line, read_record, run_cli, run_in_process

BOMB = "".join(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
               for previous, name in zip("abcdefgh", "bcdefghi"))
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB  # 9^9 strings expanded


def _timed_cli(*arguments: str, env: dict, cwd: Path, limit_s: float) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", *arguments], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=limit_s + 60)
    assert time.perf_counter() - started < limit_s, (arguments, done.stderr[-2000:])
    return done


def _root_with(tmp_path: Path, task_root: Path, name: str = "root") -> Path:
    root = tmp_path / name
    shutil.copytree(task_root, root)
    return root


def _only_run_dir(output: Path) -> Path:
    [run_dir] = [p for p in output.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


# --- 1. a damaged record is never reused, printed or exported ---------------------------------------------------

def _edit_first_prediction(run_dir: Path) -> None:
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["prediction"] = {"pos": "neg", "neg": "pos"}[row["prediction"]]
    lines[0] = json.dumps(row)
    (run_dir / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def _lmeval_export(run_dir: Path) -> tuple[dict, list[dict]]:
    """The lm-eval results file less its dates, and the samples, of the run's newest export."""
    [results] = sorted((run_dir / "lm-eval").glob("results_*.json"))
    [samples] = sorted((run_dir / "lm-eval").glob("samples_*.jsonl"))
    payload = json.loads(results.read_text())
    for key in ("date", "total_evaluation_time_seconds", "start_time", "end_time"):
        payload.pop(key, None)
    return payload, [json.loads(line) for line in samples.read_text().splitlines()]


DAMAGES = {
    "a prediction edited": _edit_first_prediction,
    "predictions cut short": lambda run_dir: (run_dir / "predictions.jsonl").write_text(
        "".join((run_dir / "predictions.jsonl").read_text().splitlines(keepends=True)[:2])),
    "metrics.json not JSON": lambda run_dir: (run_dir / "metrics.json").write_text('{"task": "toy", '),
    "metrics.json of another run": lambda run_dir: (run_dir / "metrics.json").write_text(
        (run_dir / "metrics.json").read_text().replace(read_run(run_dir).run_key, "0123456789")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_record_is_scored_again_and_exported_as_a_fresh_run(damage: str, tmp_path: Path, harness_env: dict,
                                                                      tiny_model_dir: Path) -> None:
    settings = ["task=toy", f"model={tiny_model_dir}", "shots=2", "lmeval_results=true"]
    fresh = run_in_process(*settings, f"output_dir={tmp_path / 'fresh'}")
    first = _only_run_dir(tmp_path / "fresh")
    expected = _lmeval_export(first)

    kept = run_in_process(*settings, f"output_dir={tmp_path / 'kept'}")
    run_dir = kept.run_dir
    shutil.rmtree(run_dir / "lm-eval")
    DAMAGES[damage](run_dir)
    with pytest.raises(RecordError):
        read_run(run_dir)

    done = run_cli("run", *settings, f"output_dir={tmp_path / 'kept'}", env=harness_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"harness: not reusing the record in {run_dir}: " in done.stderr and "scoring the run again" in done.stderr
    assert "complete already" not in done.stdout  # scored, not answered from the damaged files
    again = read_record(run_dir)  # verified: predictions.jsonl is the file the run wrote
    assert again.metrics == fresh.record.metrics and again.predictions_sha256 == fresh.record.predictions_sha256
    assert _lmeval_export(run_dir) == expected  # the export equals a fresh run's

    reused = run_cli("run", *settings, f"output_dir={tmp_path / 'kept'}", env=harness_env, cwd=tmp_path)
    assert "complete already" in reused.stdout and "not reusing" not in reused.stderr  # repaired for good


def test_a_damaged_record_in_a_study_is_run_again(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    study = ["sensitivity", "task=toy", f"model={tiny_model_dir}", "shots=2", "sets=2", "vary=set",
             f"output_dir={tmp_path}"]
    first = run_cli(*study, env=harness_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    _edit_first_prediction(sorted(tmp_path.glob("toy__*"))[0])
    planned = run_cli(*study, "--dry-run", env=harness_env, cwd=tmp_path)
    assert "1 recorded already, 1 to run" in planned.stdout, planned.stdout
    again = run_cli(*study, env=harness_env, cwd=tmp_path)
    assert again.returncode == 0 and "(1 run made, 1 reused" in again.stdout, again.stderr[-3000:]
    for run_dir in tmp_path.glob("toy__*"):
        read_run(run_dir)


# --- 11. one process at a time per run directory ----------------------------------------------------------------

def _line_with(process: subprocess.Popen, word: str) -> str:
    """The first line of the process's stderr holding `word` (datasets may print progress lines before it)."""
    for line in process.stderr:
        if word in line:
            return line
    raise AssertionError(f"the process ended without saying {word!r}")


def test_a_second_command_waits_for_the_run_in_progress_then_reuses_it(tmp_path: Path, harness_env: dict,
                                                                      tiny_model_dir: Path) -> None:
    """This test plays the first command: it holds the run directory while the second starts, finishes the run
    (its record copied in from an identical run elsewhere), then lets go."""
    from harness.runs.lock import RunLock

    settings = ["task=toy", f"model={tiny_model_dir}", "shots=2"]
    finished = run_in_process(*settings, f"output_dir={tmp_path / 'elsewhere'}").run_dir
    run_dir = tmp_path / "out" / finished.name
    with RunLock(run_dir):
        second = subprocess.Popen([sys.executable, "-m", "harness", "run", *settings, f"output_dir={tmp_path / 'out'}"],
                                  env=harness_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        waiting = _line_with(second, "waiting")
        assert f"{run_dir} is being run by process {os.getpid()} on " in waiting, waiting
        assert "waiting for it to finish" in waiting and second.poll() is None
        for path in finished.iterdir():
            shutil.copy(path, run_dir)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    assert "complete already" in out  # the first's record, not a second scoring
    read_record(run_dir)

    with RunLock(run_dir):  # the same with a run that is not finished when the holder lets go: it is scored
        for path in run_dir.iterdir():
            if path.name != ".lock":  # the lock file is what the third command waits on
                path.unlink()
        third = subprocess.Popen([sys.executable, "-m", "harness", "run", *settings, f"output_dir={tmp_path / 'out'}"],
                                 env=harness_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert "is being run by process" in _line_with(third, "waiting")
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0 and "complete already" not in out, err[-2000:]
    assert read_record(run_dir).predictions_sha256 == read_record(finished).predictions_sha256


def test_a_waiter_takes_the_run_over_when_its_holder_lets_go(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The holder removes the lock file as it lets go; the waiter, which locked the removed file, locks the path
    anew, and a third process that came meanwhile is not let in beside it."""
    import threading

    from harness.runs.lock import LOCK_FILE, RunLock

    run_dir = tmp_path / "run"
    holder = RunLock(run_dir).__enter__()
    events: list[str] = []

    def waiter() -> None:
        with RunLock(run_dir):
            events.append("waiter holds")
            time.sleep(0.3)
            events.append("waiter lets go")

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    assert events == [] and "is being run by process" in capsys.readouterr().err
    holder.__exit__(None, None, None)
    time.sleep(0.1)
    with RunLock(run_dir):  # a third, arriving while the waiter holds the run: it waits its turn
        events.append("third holds")
    thread.join()
    assert events == ["waiter holds", "waiter lets go", "third holds"]
    assert not (run_dir / LOCK_FILE).exists()


# --- 2, 6, 9. task and template files: bounded, one line, and one bad file stops only its own runs ---------------

def test_an_alias_bomb_fails_its_own_runs_in_one_line_and_no_others(tmp_path: Path, harness_env: dict,
                                                                    task_root: Path, tiny_model_dir: Path) -> None:
    hostile = tmp_path / "hostile"
    (hostile / "tasks").mkdir(parents=True)
    (hostile / "tasks" / "bomb.yaml").write_text(BOMB)
    (hostile / "prompts" / "toy").mkdir(parents=True)
    (hostile / "prompts" / "toy" / "bomb.yaml").write_text(BOMB.replace("a: &a", "example: '{{ text }} {{ answer }}'"
                                                                        "\na: &a"))
    # and a task whose column expression backtracks without end on its data
    (hostile / "tasks" / "slow.yaml").write_text((task_root / "tasks" / "toy.yaml").read_text().replace(
        "name: toy", "name: slow").replace("  label_values:", "  columns: {text: \"text | regex_replace('(a|aa)+$', '')\"}"
                                                                "\n  label_values:"))
    env = {**harness_env, "HARNESS_PATH": f"{hostile}{os.pathsep}{task_root}"}

    started = time.perf_counter()
    assert run_cli("list", env=harness_env, cwd=tmp_path).returncode == 0
    alone = time.perf_counter() - started
    started = time.perf_counter()
    listed = run_cli("list", env=env, cwd=tmp_path)
    assert time.perf_counter() - started < 1.5 * alone + 2  # the time it takes without the hostile files
    assert listed.returncode == 0, listed.stderr
    assert any(line.strip().startswith("slow") and "BROKEN" not in line for line in listed.stdout.splitlines())
    [line] = [line for line in listed.stdout.splitlines() if line.strip().startswith("bomb")]
    assert "BROKEN: cannot read task file" in line and "more than 100,000 values" in line
    assert any(line.strip().startswith("toy") for line in listed.stdout.splitlines())

    bomb = _timed_cli("run", "task=bomb", env=env, cwd=tmp_path, limit_s=15)
    assert f"cannot read task file {hostile / 'tasks' / 'bomb.yaml'}: it expands to more than" in one_error_line(bomb)
    template = _timed_cli("run", "task=toy", "template=bomb", env=env, cwd=tmp_path, limit_s=15)
    assert "cannot read template" in one_error_line(template)
    good = _timed_cli("run", "task=toy", f"model={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", env=env,
                      cwd=tmp_path, limit_s=60)
    assert good.returncode == 0, good.stderr[-2000:]


@pytest.mark.parametrize(("content", "message"), [
    ('example: "{{ text }} {{ answer }}\nseparator: [\n',
     "while scanning a quoted scalar (line 1, column 10) found unexpected end of stream (line 3, column 1)"),
    ("example: !!python/object/apply:os.system ['touch pwned']\n",
     "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system' (line 1"),
    ("example: &a [*a]\n", "an alias refers to a node that contains it"),
    ("example: '{{ text }} {{ answer }}'\n---\nexample: x\n", "expected a single document"),
])
def test_a_broken_template_file_is_one_line(content: str, message: str, tmp_path: Path, harness_env: dict,
                                           task_root: Path) -> None:
    root = _root_with(tmp_path, task_root)
    (root / "prompts" / "toy" / "broken.yaml").write_text(content)
    done = run_cli("run", "task=toy", "template=broken", "model=./never-loaded", env={**harness_env,
                   "HARNESS_PATH": str(root)}, cwd=tmp_path)
    assert f"cannot read template {root / 'prompts' / 'toy' / 'broken.yaml'}: {message}" in one_error_line(done)
    assert not (tmp_path / "pwned").exists()


def test_a_python_tag_in_a_task_file_is_one_line(tmp_path: Path, harness_env: dict) -> None:
    root = tmp_path / "root"
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "evil.yaml").write_text("name: !!python/object/apply:os.system ['touch pwned']\nfields: [a]\n")
    done = run_cli("run", "task=evil", env={**harness_env, "HARNESS_PATH": str(root)}, cwd=tmp_path)
    assert "could not determine a constructor for the tag" in one_error_line(done)
    assert not (tmp_path / "pwned").exists()


def test_a_task_named_otherwise_than_its_file_is_one_line(tmp_path: Path, harness_env: dict, task_root: Path) -> None:
    root = _root_with(tmp_path, task_root)
    (root / "tasks" / "toy.yaml").rename(root / "tasks" / "mytask.yaml")
    shutil.copytree(root / "prompts" / "toy", root / "prompts" / "mytask")
    done = run_cli("run", "task=mytask", env={**harness_env, "HARNESS_PATH": str(root)}, cwd=tmp_path)
    assert ("says name: toy; a task's name must be its file's name (mytask): rename one of them"
            in one_error_line(done))


# --- 3, 4. column expressions and patterns: the sandbox and the time limit --------------------------------------

def _task_with_column(root: Path, expression: str) -> None:
    task = (root / "tasks" / "toy.yaml").read_text()
    (root / "tasks" / "toy.yaml").write_text(task.replace("  label_values:", f"  columns: {{text: {json.dumps(expression)}}}"
                                                                              "\n  label_values:"))


@pytest.mark.parametrize(("expression", "message"), [
    ("text.format.__globals__", "access to attribute '__globals__' of"),
    ("text | regex_replace('(a|aa)+$', '')", "took over 1 s on a text of"),
])
def test_a_hostile_column_expression_is_one_line_and_quick(expression: str, message: str, tmp_path: Path,
                                                           harness_env: dict, task_root: Path) -> None:
    root = _root_with(tmp_path, task_root)
    data = root / "data"
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    rows[0]["text"] = "a" * 40 + "!"  # what makes the pattern backtrack
    (data / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = (root / "tasks" / "toy.yaml").read_text().replace(str(task_root / "data"), str(data))
    (root / "tasks" / "toy.yaml").write_text(task)
    _task_with_column(root, expression)
    done = _timed_cli("run", "task=toy", "model=./never-loaded", env={**harness_env, "HARNESS_PATH": str(root)},
                      cwd=tmp_path, limit_s=20)
    line = one_error_line(done)
    assert message in line and f"the expression {expression!r}" in line, line


SANDBOX_ESCAPES = [
    "text.__class__", "text.__class__.__mro__[1].__subclasses__()", "text.format.__globals__",
    "text.__init__.__globals__", "cycler.__init__.__globals__.os", "joiner.__init__.__globals__",
    "namespace.__init__.__globals__", "lipsum.__globals__['os']", "range.__self__.__import__('os')",
    "[text.__class__]", "{'k': text.__class__}",
]


@pytest.mark.parametrize("expression", SANDBOX_ESCAPES)
def test_sandbox_escapes_are_refused_where_they_are_written(expression: str) -> None:
    evaluate = compile_expression(expression, "task 'toy' columns.text")
    with pytest.raises(HarnessError, match=r"task 'toy' columns\.text: the expression .* failed on a row"):
        evaluate({"text": "a review"})


@pytest.mark.parametrize("source", ["{{ 'a' * 10**10 }}", "{{ [1] * 10**10 }}", "{{ 10 ** 100000000 }}",
                                    "{% for i in range(10**9) %}{% endfor %}"])
def test_templates_cannot_ask_for_unbounded_memory_or_time(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(Exception, match="refused|MAX_RANGE"):
        ENVIRONMENT.from_string(source).render()
    assert time.perf_counter() - started < 1


def test_answer_patterns_are_time_bounded() -> None:
    from harness.config import AnswerConfig, AnswerFilter
    from harness.metrics.functions import extracted_answer, matching_answer

    generation = "a" * 40 + "!"
    started = time.perf_counter()
    with pytest.raises(HarnessError, match="took over 1 s"):
        extracted_answer(generation, AnswerFilter(regex="(a|aa)+$"))
    with pytest.raises(HarnessError, match="took over 1 s"):
        matching_answer(generation, ["x"], AnswerConfig(regexes_to_ignore=["(a|aa)+$"]))
    assert time.perf_counter() - started < 5
    # the issue's own pattern runs in linear time on this engine: the result is re's
    assert extracted_answer("a" * 36 + "b", AnswerFilter(regex="(a+)+$")) == "[invalid]"


# --- 5. every report format escapes what came from files --------------------------------------------------------

def test_markdown_latex_and_csv_reports_escape_names_from_files(tmp_path: Path) -> None:
    from harness.__main__ import main
    from helpers import write_run

    hostile = '<img src=x onerror="alert(1)">'
    write_run(tmp_path, correct={1, 2}, model=hostile, template="<script>alert(2)</script>")
    write_run(tmp_path, correct={1}, model="=HYPERLINK(\"http://x\")", seed=2)
    assert main(["report", str(tmp_path)]) == 0
    report = tmp_path / "report"
    markdown = (report / "report.md").read_text()
    assert "<img" not in markdown and "<script" not in markdown and "&lt;img src=x" in markdown
    latex = (report / "report.tex").read_text()
    assert "<" not in latex and ">" not in latex and r'\textless{}img src=x onerror="alert(1)"\textgreater{}' in latex
    page = (report / "report.html").read_text()
    assert "<img src=x" not in page and "<script>alert" not in page
    assert "'=HYPERLINK" in (report / "summary.csv").read_text()  # opens as text, not a formula


# --- 7, 8. model paths ----------------------------------------------------------------------------------------------

def test_a_model_path_with_hydra_syntax_characters_is_taken_as_it_is(tmp_path: Path, harness_env: dict,
                                                                     tiny_model_dir: Path) -> None:
    odd = tmp_path / "my model (v2) <best>=1,2"
    shutil.copytree(tiny_model_dir, odd)
    done = run_cli("run", "task=toy", f"model={odd}", f"output_dir={tmp_path / 'out'}", env=harness_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_record(_only_run_dir(tmp_path / "out")).model == odd.name
    quoted = run_cli("run", "task=toy", f"model='{odd}'", f"output_dir={tmp_path / 'out'}", env=harness_env,
                     cwd=tmp_path)
    assert "complete already" in quoted.stdout, quoted.stderr[-2000:]  # quoted the Hydra way: the same path
    other = run_cli("run", "task=toy", f"output_dir={tmp_path}/a(b)", env=harness_env, cwd=tmp_path)
    assert ("goes in quotes, key='value'" in one_error_line(other)
            and f"'output_dir={tmp_path}/a(b)'" in other.stderr)


def test_an_incomplete_model_directory_names_what_is_missing(tmp_path: Path, harness_env: dict,
                                                             tiny_model_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("run", "task=toy", f"model={empty}", env=harness_env, cwd=tmp_path)
    assert (f"model directory {empty} has no config.json and no weights (model.safetensors, or pytorch_model.bin, "
            "or their shards) and no tokenizer files" in one_error_line(done))
    half = tmp_path / "half"
    half.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, half)
    done = run_cli("run", "task=toy", f"model={half}", env=harness_env, cwd=tmp_path)
    assert f"model directory {half} has no tokenizer files (tokenizer.json" in one_error_line(done)


# --- 10 and the rest: settings checked before anything loads ------------------------------------------------------

def test_the_cache_commands_say_when_the_cache_directory_does_not_exist(tmp_path: Path, harness_env: dict) -> None:
    env = {**harness_env, "HARNESS_CACHE": str(tmp_path / "typo")}
    verified = run_cli("cache", "verify", env=env, cwd=tmp_path)
    assert f"the cache directory {tmp_path / 'typo'} (HARNESS_CACHE) does not exist" in one_error_line(verified)
    listed = run_cli("cache", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "does not exist" in listed.stdout


@pytest.mark.parametrize(("arguments", "message"), [
    (["run", "task=toy", "model=./never-loaded", "model.max_length=-1"], "model.max_length must be >= 1"),
    (["run", "task=toy", "model=./never-loaded", "model.dtype=float8"],
     "Invalid value 'float8', expected one of [auto, float32, bfloat16, float16]"),
    (["sensitivity", "task=toy", "vary=", "--dry-run"], "vary= names no value"),
    (["sensitivity", "task=toy", "methods=", "--dry-run"], "methods= names no value"),
    (["run", "task=toy", "model=./never-loaded", "batch_size=0"], "batch_size must be a positive integer or auto"),
    (["run", "task=toy", "model=./never-loaded", "batch_size=8", "batch_tokens=512"],
     "batch_tokens is the token budget of batch_size=auto"),
    (["run", "task=toy", "model=./never-loaded", "batch_tokens=0"], "batch_tokens is the token budget"),
])
def test_settings_that_can_never_work_fail_before_anything_loads(arguments: list[str], message: str, tmp_path: Path,
                                                                 harness_env: dict) -> None:
    done = _timed_cli(*arguments, env=harness_env, cwd=tmp_path, limit_s=30)
    assert message in one_error_line(done)


# --- 12. what batch_size may change: scores by float rounding, never a prediction ------------------------------

BATCH_SCORE_BOUND = 1e-4  # what the README states; measured on SmolLM2-135M by benchmarks/batch_sizes.py


def test_batch_size_changes_no_prediction_and_scores_only_by_rounding(tmp_path: Path, harness_env: dict,
                                                                      tiny_llama_dir: Path) -> None:
    rows = {}
    for batch_size in ("1", "3", "8", "auto", "auto batch_tokens=40"):  # auto: by a token budget
        result = run_in_process("task=toy", f"model={tiny_llama_dir}", "shots=4", *f"batch_size={batch_size}".split(),
                                f"output_dir={tmp_path / batch_size.replace(' ', '_').replace('=', '-')}")
        rows[batch_size] = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    for batch_size, predicted in rows.items():
        assert [row["prediction"] for row in predicted] == [row["prediction"] for row in rows["1"]], batch_size
        for row, reference in zip(predicted, rows["1"]):
            for label, score in row["scores"].items():
                assert abs(score - reference["scores"][label]) <= BATCH_SCORE_BOUND, (batch_size, row["id"], label)
