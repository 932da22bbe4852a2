"""One run, end to end: plan -> inputs -> model -> predictions -> metrics -> record.

The stages that need no model (harness/plan.py) come first and import no torch, so every mistake a
user can make without the model fails in a second, and a run whose record is complete is answered
without loading anything. The model stages are in harness/execute.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.config import RunConfig
from harness.distributed import is_main_process
from harness.errors import HarnessError
from harness.lmeval_results import write_lmeval_results
from harness.plan import PREDICTIONS_FILE, RECORD_FILE, RunResult, choose_inputs, plan_run, start_run_dir
from harness.records import RecordError, RunRecord


def run(config: RunConfig, progress: bool = True) -> RunResult:
    started = time.perf_counter()
    plan = plan_run(config)  # settings, template, data, every input's hash and the run key: no model yet
    if plan.complete and not config.rerun:  # complete: an interrupted sweep resumes, a repeated command is free
        result = reused(plan.run_dir)
    else:
        selection = choose_inputs(plan)  # each test item's demonstrations, the fine-tuning set
        start_run_dir(plan)  # config.yaml written: the output directory is writable
        from harness.execute import execute  # torch and transformers: only once a model must run

        result = execute(plan, selection, started, progress)  # model -> predictions -> metrics -> record
    if config.lmeval_results and is_main_process():  # a data-parallel run's other processes hold the same record
        write_lmeval_results(plan.run_dir, result.record, plan.resolved,
                             {example.id: dict(example.fields) for example in plan.examples},
                             read_predictions(plan.run_dir))
    return result


def reused(run_dir: Path) -> RunResult:
    path = run_dir / RECORD_FILE
    try:
        record = RunRecord.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecordError) as error:
        raise HarnessError(f"the record {path} cannot be read ({error}): move it away or run with rerun=true") from None
    return RunResult(run_dir=run_dir, record=record, reused=True)


def read_predictions(run_dir: Path) -> list[dict]:
    text = (run_dir / PREDICTIONS_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
