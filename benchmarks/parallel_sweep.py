"""A 4-run sweep on this machine: one job at a time against two side by side (Hydra's joblib launcher), each
timed as one command, and the threads each run had (recorded in its environment).

    python benchmarks/parallel_sweep.py                     # this checkout
    python benchmarks/parallel_sweep.py --checkout DIR      # another one (e.g. a commit before the thread rule)

Run nothing else meanwhile: two processes that each use every core slow each other down, which is what
this measures. The runs are `task=sentiment shots=4 seed=1..4 limit=100` with SmolLM2-135M.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import MODEL, REPO, ensure_model, run_logged

SWEEP = ["task=sentiment", "shots=4", "seed=1,2,3,4", "limit=100", f"model={MODEL}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=REPO, help="the harness checkout to run")
    args = parser.parse_args()
    ensure_model()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n_jobs in (1, 2):
            output = Path(scratch) / f"n{n_jobs}"
            command = [sys.executable, "-m", "harness", "run", "-m", "hydra/launcher=joblib",
                       f"hydra.launcher.n_jobs={n_jobs}", *SWEEP, f"output_dir={output}"]
            seconds = run_logged(command, Path(scratch) / f"n{n_jobs}.log", cwd=args.checkout)
            records = [json.loads(p.read_text()) for p in output.glob("*/metrics.json")]
            threads = sorted({r["environment"].get("threads", "not recorded") for r in records}, key=str)
            scoring = sum(r["cost"]["scoring_time_s"] for r in records)
            rows.append((n_jobs, seconds, scoring, threads, len(records)))
    print("| n_jobs | runs | sweep wall time (s) | scoring time summed over runs (s) | threads per run |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for n_jobs, seconds, scoring, threads, count in rows:
        print(f"| {n_jobs} | {count} | {seconds:.1f} | {scoring:.1f} | {', '.join(map(str, threads))} |")
    print(f"n_jobs=2 / n_jobs=1 wall time: {rows[1][1] / rows[0][1]:.2f} (checkout {args.checkout})")


if __name__ == "__main__":
    main()
