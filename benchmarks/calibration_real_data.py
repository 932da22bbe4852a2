"""Does contextual calibration help on real data? k-shot accuracy with and without it, over seeds.

For each task, one Hydra sweep through the harness CLI: k in {1, 4, 8} x seeds, plus k = 0 (no
demonstrations, so one seed is the whole story), all with calibration=contextual. A calibrated
run records its uncalibrated metrics as well (same scores, before the reweighting), so each run
gives both columns of the table. Prints a markdown table: accuracy mean ± std over seeds, and
the mean ECE, uncalibrated vs calibrated (Zhao et al. 2021, Table 1 style).

Usage (the issue's setting: smollm2-135m on ../shared/data, Zhao et al.'s prompt formats):
    python benchmarks/calibration_real_data.py --output-dir results/calibration
    python benchmarks/calibration_real_data.py --tasks sst2 --shots 0 4 --seeds 1 2   # quicker
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from harness.report.load import read_run

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Zhao et al. 2021's formats where the task has one
TEMPLATES = {"sst2": "review_zhao", "agnews": "article", "trec": "answer_type_instructed", "rte": "zhao",
             "cb": "zhao", "sst5": "review"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "agnews", "trec", "rte"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shots", nargs="+", type=int, default=[0, 1, 4, 8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--subsample", type=int, default=300, help="test items per task (Zhao et al. use 300)")
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    parser.add_argument("--output-dir", type=Path, default=Path("results/calibration"))
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides, e.g. device=cuda")
    args = parser.parse_args()

    started = time.perf_counter()
    for task in args.tasks:
        common = [f"task={task}", f"task.data_dir={args.data_root / task}", f"template={TEMPLATES.get(task, 'all')}",
                  f"model={args.model}", "calibration=contextual", f"subsample={args.subsample}",
                  f"output_dir={args.output_dir}", *args.extra]
        sweeps = []
        if 0 in args.shots:
            sweeps.append(["shots=0", "seed=1"])  # no demonstrations: every seed gives the same run
        if [k for k in args.shots if k]:
            sweeps.append([f"shots={','.join(str(k) for k in args.shots if k)}",
                           f"seed={','.join(map(str, args.seeds))}"])
        for sweep in sweeps:
            command = [sys.executable, "-m", "harness", "run", "-m", *common, *sweep]
            print("$", " ".join(command), file=sys.stderr, flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    total_s = time.perf_counter() - started

    print(summarise(load(args.output_dir, args.tasks, args.model)).to_markdown(index=False))
    print(f"\nWall time of the sweeps: {total_s / 60:.1f} min.")


def load(output_dir: Path, tasks: list[str], model: str) -> pd.DataFrame:
    rows = []
    for path in sorted(output_dir.glob("*/metrics.json")):
        record = read_run(path.parent)
        if record.task in tasks and record.model == model and record.calibration == "contextual":
            rows.append({"task": record.task, "template": record.template, "k": record.shots,
                         "seed": record.seed, "n": record.n,
                         "acc": record.uncalibrated["accuracy"], "acc_cc": record.metrics["accuracy"],
                         "ece": record.uncalibrated["ece"], "ece_cc": record.metrics["ece"]})
    if not rows:
        raise SystemExit(f"no calibrated run records for {tasks} in {output_dir}")
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    def mean_std(values: pd.Series) -> str:
        return f"{values.mean():.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"

    grouped = frame.groupby(["task", "template", "k"], sort=True)
    table = grouped.agg(
        seeds=("seed", "nunique"), n=("n", "first"),
        accuracy=("acc", mean_std), accuracy_calibrated=("acc_cc", mean_std),
        gain=("acc_cc", "mean"), ece=("ece", "mean"), ece_calibrated=("ece_cc", "mean"),
    ).reset_index()
    table["gain"] = (table["gain"] - grouped["acc"].mean().values).map(lambda g: f"{g:+.3f}")
    for column in ("ece", "ece_calibrated"):
        table[column] = table[column].map(lambda v: f"{v:.3f}")
    return table


if __name__ == "__main__":
    main()
