"""One run, end to end: plan -> inputs -> model -> predictions -> metrics -> record.

The stages that need no model (harness/runs/plan.py) come first and import no torch, so every mistake a
user can make without the model fails in a second, and a run whose record is complete is answered
without loading anything. The model stages are in harness/runs/execute.py.

A record is reused only as the report would read it (harness.runs.records.read_run): one whose files were
damaged or edited since its run wrote them is named and scored again, never printed or exported as a
result. One process at a time runs a run directory (harness/runs/lock.py).
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.runs.distributed import SINGLE, Processes, is_main_process, join_processes, launched_processes
from harness.runs.lmeval_export import write_lmeval_results
from harness.runs.lock import RunLock
from harness.runs.plan import RunPlan, RunResult, choose_inputs, plan_run, start_run_dir
from harness.runs.records import RECORD_FILE, RecordError, RunRecord, read_predictions, read_run


def run(config: RunConfig, progress: bool = True) -> RunResult:
    started = time.perf_counter()
    plan = plan_run(config)  # settings, template, data, every input's hash and the run key: no model yet
    # the processes of a data-parallel run decide together, as the main process finds the record
    processes = join_processes(config.device) if launched_processes() > 1 else SINGLE
    record = None if config.rerun else processes.from_main(reusable(plan.run_dir) if processes.main else None)
    if record is not None:  # an interrupted sweep resumes, a repeated command is free
        result = RunResult(run_dir=plan.run_dir, record=record, reused=True)
    else:
        result = _run_locked(plan, processes, started, progress)
    if config.lmeval_results and is_main_process():  # a data-parallel run's other processes hold the same record
        try:
            rows = read_predictions(plan.run_dir, result.record)
        except RecordError as error:  # changed since this command read or wrote it (a second command's rerun)
            raise HarnessError(f"not exporting {plan.run_dir}: {error}") from None
        write_lmeval_results(plan.run_dir, result.record, plan.resolved,
                             {example.id: dict(example.fields) for example in plan.examples}, rows)
    return result


def _run_locked(plan: RunPlan, processes: Processes, started: float, progress: bool) -> RunResult:
    """The run, with its directory held by this command: another command running it is waited for, and its
    record is then reused."""
    selection = choose_inputs(plan)  # each test item's demonstrations, the fine-tuning set
    # a data-parallel run's other processes follow the main one, which holds the lock for them
    with RunLock(plan.run_dir) if processes.main else nullcontext():
        if not plan.config.rerun:  # while this command waited for the lock, another may have finished the run
            record = processes.from_main(reusable(plan.run_dir, quiet=True) if processes.main else None)
            if record is not None:
                return RunResult(run_dir=plan.run_dir, record=record, reused=True)
        start_run_dir(plan)  # config.yaml written: the output directory is writable
        from harness.runs.execute import execute  # torch and transformers: only once a model must run

        return execute(plan, selection, started, progress)  # model -> predictions -> metrics -> record


def reusable(run_dir: Path, quiet: bool = False) -> RunRecord | None:
    """The run's complete record, checked; None when it has none, or when its files were damaged or edited since
    the run wrote them (named on stderr, unless quiet: the run is then scored again and its files replaced)."""
    if not (run_dir / RECORD_FILE).is_file():
        return None
    try:
        return read_run(run_dir)
    except RecordError as damage:
        if not quiet:
            print(f"harness: not reusing the record in {run_dir}: {damage}; scoring the run again",
                  file=sys.stderr)
        return None

