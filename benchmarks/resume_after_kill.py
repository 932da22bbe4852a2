"""kill -9 halfway through a real run, then the same command again: what is reused, and is the record the same?

Runs `python -m harness run task=sentiment shots=8` (SmolLM2-135M-Instruct, 1,306 test snippets) three
times: once uninterrupted, once killed with SIGKILL when its journal holds about half the examples,
and once more, which must score only the rest. Prints what the resumed run said it reused, its time
against the uninterrupted run's, and whether predictions.jsonl is byte-identical and metrics.json equal
apart from the per-process measurements.

Usage: python benchmarks/resume_after_kill.py [--fraction 0.5] [--workdir DIR] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.report.load import read_run
from harness.runs.records import PROCESS_MEASUREMENTS

COMMAND = [sys.executable, "-m", "harness", "run", "task=sentiment", "shots=8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.5, help="kill when this share of examples is journalled")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="more overrides for every run, e.g. limit=400")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="resume-"))
    command = [*COMMAND, *args.overrides]

    started = time.perf_counter()
    subprocess.run([*command, f"output_dir={workdir / 'uninterrupted'}"], check=True, capture_output=True)
    uninterrupted_s = time.perf_counter() - started
    [reference] = (workdir / "uninterrupted").glob("sentiment__*")
    total = read_run(reference).n

    output = workdir / "killed"
    process = subprocess.Popen([*command, f"output_dir={output}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journalled = _wait_and_kill(output, process, round(args.fraction * total))
    started = time.perf_counter()
    resumed = subprocess.run([*command, f"output_dir={output}"], check=True, capture_output=True, text=True)
    resumed_s = time.perf_counter() - started
    [run_dir] = output.glob("sentiment__*")

    said = [line for line in resumed.stderr.splitlines() if "reusing" in line]
    same_predictions = (run_dir / "predictions.jsonl").read_bytes() == (reference / "predictions.jsonl").read_bytes()
    record, reference_record = read_run(run_dir), read_run(reference)
    print(f"examples: {total}; killed with {journalled} examples in the journal")
    print(f"the resumed run said: {said[0] if said else '(nothing)'}")
    print(f"record: examples_resumed={record.cost.examples_resumed}, accuracy {record.metrics['accuracy']:.4f} "
          f"(uninterrupted {reference_record.metrics['accuracy']:.4f})")
    print(f"wall time: uninterrupted {uninterrupted_s:.1f} s, resumed {resumed_s:.1f} s")
    print(f"predictions.jsonl byte-identical: {same_predictions}")
    print(f"metrics.json equal but for {', '.join(PROCESS_MEASUREMENTS)}: "
          f"{record.reproducible_part() == reference_record.reproducible_part()}")
    print(f"run records: {workdir}")


def _wait_and_kill(output: Path, process: subprocess.Popen, examples: int) -> int:
    """SIGKILL once the journal holds `examples` scored examples (one line per batch of `rows`)."""
    while process.poll() is None:
        for journal in output.glob("*/journal.jsonl"):
            lines = journal.read_text().splitlines()[1:]
            done = sum(len(json.loads(line)["rows"]) for line in lines if line.endswith("}"))
            if done >= examples:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return done
        time.sleep(0.05)
    raise SystemExit("the run ended before it could be killed")


if __name__ == "__main__":
    main()
