"""One run scored by one process against the same run split across N processes by `accelerate launch`.

    python benchmarks/data_parallel.py                       # task=sentiment shots=8, SmolLM2-135M, 2 processes
    python benchmarks/data_parallel.py --processes 4 --overrides task=sst2 task.data_dir=../shared/data/sst2

Three runs of the same run key: split across N processes, one process with every core, and one process
with the threads each split process has (cores // N). Prints each one's wall and scoring time and how far
its record is from the split run's: predictions that differ, the largest |difference| of a label's
log-probability, and of a metric. On a machine without GPUs the processes share its cores; on N GPUs
each takes one. Run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import MODEL, REPO, ensure_model, run_logged

from harness.runs.launch import launch_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--overrides", nargs="*", default=["task=sentiment", "shots=8"],
                        help="the run's settings (default: task=sentiment shots=8, the whole test split)")
    args = parser.parse_args()
    ensure_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    run = ["-m", "harness", "run", f"model={MODEL}", *args.overrides]
    threads = max(1, cores // args.processes)
    launch = launch_command(args.processes, threads)
    # the split run, one process with every core, and one process with the threads each split process has:
    # a difference between the first two that the third does not have comes from the thread count, not the split
    variants = {"split": (launch, {}), "one": ([sys.executable], {}),
                "one, same threads": ([sys.executable], {"OMP_NUM_THREADS": str(threads)})}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (start, env) in variants.items():
            output = Path(scratch) / name.replace(", ", "-").replace(" ", "-")
            seconds = run_logged([*start, *run, f"output_dir={output}"], output.with_suffix(".log"), REPO, env)
            [path] = output.glob("*/metrics.json")
            results[name] = (path.parent.name, json.loads(path.read_text()), _rows(path.parent), seconds)
    split_key, split_record, split_rows, _ = results["split"]
    print(f"{' '.join(args.overrides)}, {MODEL}, {split_record['n']} test items, {cores} cores")
    metrics = list(split_record["metrics"])
    print("| run | processes | threads each | wall time (s) | scoring time (s) | " + " | ".join(metrics) +
          " | predictions unlike the split run's | largest abs. log-prob difference | largest metric difference |")
    print("| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in metrics) + " | ---: | ---: | ---: |")
    for name, (key, record, rows, seconds) in results.items():
        assert key == split_key, f"{name}: another run key ({key}, not {split_key})"
        differing = sum(a["prediction"] != b["prediction"] for a, b in zip(rows, split_rows))
        largest = max(abs(a["scores"][label] - b["scores"][label]) for a, b in zip(rows, split_rows)
                      for label in a["scores"])
        metric_gap = max(abs(record["metrics"][m] - split_record["metrics"][m]) for m in metrics)
        environment, cost = record["environment"], record["cost"]
        print(f"| {name} | {environment.get('processes', 1)} | {environment['threads']} | {seconds:.1f} | "
              f"{cost['scoring_time_s']:.1f} | " + " | ".join(f"{record['metrics'][m]:.4f}" for m in metrics) +
              f" | {differing} of {len(rows)} | {largest:.2e} | {metric_gap:.1e} |")


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


if __name__ == "__main__":
    main()
