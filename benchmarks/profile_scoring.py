"""Where a run's time goes, operator by operator: `python -m harness run` in this process under torch.profiler.

    python benchmarks/profile_scoring.py                                  # the shapes below, 60 items each
    python benchmarks/profile_scoring.py --shapes piqa:0 --limit 100 --top 12
    PYTHONPATH=/path/to/old/checkout python benchmarks/profile_scoring.py  # the same for another commit's code

The run goes through the command line's own entry (harness.__main__.main), which every version of the harness
has, so one script profiles the code before and after a change. Printed per shape: the operators with the most
self CPU time, each as a share of all operators' self CPU time (a matrix multiplication's share says how much of
the work is the model itself), and the run's scoring seconds from its record.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from common import MODEL, commit
from torch.profiler import ProfilerActivity, profile

SHAPES = ["piqa:0", "hellaswag:0", "social_iqa:0", "arc_easy:0", "sentiment:8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=SHAPES, help="task:shots")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--top", type=int, default=8)
    arguments = parser.parse_args()
    import harness
    from harness.__main__ import main as harness_main

    print(f"{MODEL} on the CPU, {torch.get_num_threads()} threads, the harness of {Path(harness.__file__).parent}, "
          f"checkout at {commit()}, {arguments.limit} items")
    with tempfile.TemporaryDirectory(prefix="profile-") as work:
        for shape in arguments.shapes:
            task, _, shots = shape.partition(":")
            argv = ["run", f"task={task}", f"model={MODEL}", f"shots={shots or 0}", f"limit={arguments.limit}",
                    "device=cpu", "batch_size=8", f"output_dir={work}", "rerun=true"]
            with profile(activities=[ProfilerActivity.CPU]) as profiled:
                if harness_main(argv) != 0:
                    sys.exit(f"{shape}: the run failed")
            [record] = sorted(Path(work).glob(f"{task}*/metrics.json"), key=lambda path: path.stat().st_mtime)[-1:]
            scoring = json.loads(record.read_text())["cost"]["scoring_time_s"]
            events = profiled.key_averages()
            total = sum(event.self_cpu_time_total for event in events)
            print(f"\n{shape}: scoring {scoring:.1f} s; operators' self CPU time {total / 1e6:.1f} s")
            print("| operator | self CPU s | share |")
            print("| --- | ---: | ---: |")
            for event in sorted(events, key=lambda event: -event.self_cpu_time_total)[: arguments.top]:
                print(f"| {event.key} | {event.self_cpu_time_total / 1e6:.2f} | "
                      f"{event.self_cpu_time_total / total:.1%} |")


if __name__ == "__main__":
    main()
