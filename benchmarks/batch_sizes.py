"""What batch_size (and the prefix cache) may change in a run's predictions.jsonl: measured on the real model.

Runs the same run at several batch sizes, and once with prefix_cache=false, through the command line into one
scratch directory each (batch_size is out of the run key, so each goes to its own directory), then compares
every item's prediction and every label's score with batch size 1's:

    python benchmarks/batch_sizes.py                       # sentiment 8-shot, 200 items, SmolLM2-135M
    python benchmarks/batch_sizes.py --task sst2 --shots 4 --limit 100 --extra task.data_dir=../shared/data/sst2

Prints, per setting, whether predictions.jsonl is byte-identical, how many predictions differ and the largest
score difference; the README's statement of batch_size's guarantee quotes this script's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import MODEL, commit, run_logged

SETTINGS = {"batch 1": ["batch_size=1"], "batch 8": ["batch_size=8"], "batch auto": ["batch_size=auto"],
            "batch 3": ["batch_size=3"], "batch 8, no prefix cache": ["batch_size=8", "prefix_cache=false"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batch-sizes-"))
    rows: dict[str, list[dict]] = {}
    raw: dict[str, bytes] = {}
    seconds: dict[str, float] = {}
    for name, overrides in SETTINGS.items():
        output = work / name.replace(" ", "_").replace(",", "")
        command = [sys.executable, "-m", "harness", "run", f"task={arguments.task}", f"model={arguments.model}",
                   f"shots={arguments.shots}", f"limit={arguments.limit}", "device=cpu", f"output_dir={output}",
                   *arguments.extra, *overrides]
        seconds[name] = run_logged(command, work / f"{output.name}.log", cwd=Path.cwd())
        [predictions] = output.glob("*/predictions.jsonl")
        raw[name] = predictions.read_bytes()
        rows[name] = [json.loads(line) for line in raw[name].decode().splitlines()]
    reference = rows["batch 1"]
    print(f"{arguments.task}, {arguments.model}, {arguments.shots} shots, {len(reference)} items (harness at "
          f"{commit()}), against batch size 1:")
    print("| setting | predictions.jsonl identical | predictions differing | largest score difference | wall s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, predicted in rows.items():
        differing = sum(row["prediction"] != want["prediction"] for row, want in zip(predicted, reference))
        largest = max(abs(value - want["scores"][label]) for row, want in zip(predicted, reference)
                      for label, value in row["scores"].items())
        print(f"| {name} | {'yes' if raw[name] == raw['batch 1'] else 'no'} | {differing} | {largest:.2e} | "
              f"{seconds[name]:.1f} |")
    print(f"(runs kept in {work})")


if __name__ == "__main__":
    main()
