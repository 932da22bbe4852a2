"""One run, end to end: plan -> inputs -> model -> predictions -> metrics -> record.

The stages that need no model (harness/plan.py) come first and import no torch, so every mistake a
user can make without the model fails in a second, and a run whose record is complete is answered
without loading anything. The model stages are in harness/execute.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.plan import RECORD_FILE, RunResult, choose_inputs, plan_run, start_run_dir
from harness.records import RecordError, RunRecord


def run(config: RunConfig, progress: bool = True) -> RunResult:
    started = time.perf_counter()
    plan = plan_run(config)  # settings, template, data, every input's hash and the run key: no model yet
    if plan.complete and not config.rerun:  # complete: an interrupted sweep resumes, a repeated command is free
        return reused(plan.run_dir)
    selection = choose_inputs(plan)  # each test item's demonstrations, the fine-tuning set
    start_run_dir(plan)  # config.yaml written: the output directory is writable
    from harness.execute import execute  # torch and transformers: only once a model must run

    return execute(plan, selection, started, progress)  # model -> predictions -> metrics -> record


def reused(run_dir: Path) -> RunResult:
    path = run_dir / RECORD_FILE
    try:
        record = RunRecord.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecordError) as error:
        raise HarnessError(f"the record {path} cannot be read ({error}): move it away or run with rerun=true") from None
    return RunResult(run_dir=run_dir, record=record, reused=True)
