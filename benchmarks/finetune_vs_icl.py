"""ICL versus light fine-tuning on the same k examples: accuracy over seeds, and cost.

Runs one Hydra sweep through the harness CLI (methods x seeds, same task, k, template and test
items), then reads the run records and prints a markdown table: accuracy and macro-F1 mean ± std
over seeds, training time, trainable parameters, training FLOPs, inference tokens per test
example, and the break-even number of queries after which fine-tuning is cheaper than k-shot ICL:

    break_even = training FLOPs / (2 N x (ICL tokens per query - fine-tuned tokens per query))

with N the model's parameter count (forward cost 2N per token). ICL's tokens per query count the
demonstrations every time (what an API user pays); the harness's prefix cache computes them once
per run, so its own wall time is lower than that count suggests.

Usage (the issue's setting: smollm2-135m, `sentiment`, k = 16 per class, 5 seeds):
    python benchmarks/finetune_vs_icl.py
    python benchmarks/finetune_vs_icl.py --methods icl lora --seeds 1 2 --subsample 100   # quicker
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.report.load import read_run
from harness.report.stats import break_even_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shots", type=int, default=32, help="k, drawn class-balanced (16 per class for 2 labels)")
    parser.add_argument("--methods", nargs="+", default=["icl", "lora", "ia3", "bitfit", "full"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--subsample", type=int, default=300, help="test items, the same random ones for every run")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the run records here (default: a temp dir)")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides, e.g. device=cuda")
    args = parser.parse_args()

    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="finetune_vs_icl_"))
    command = [
        sys.executable, "-m", "harness", "run", "-m",
        f"task={args.task}", f"model={args.model}", f"shots={args.shots}", "demos=balanced",
        f"method={','.join(args.methods)}", f"seed={','.join(map(str, args.seeds))}",
        f"subsample={args.subsample}", "method.save_weights=false", f"output_dir={output_dir}", *args.extra,
    ]
    print("$", " ".join(command), file=sys.stderr)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    total_s = time.perf_counter() - started

    table = summarise(load_records(output_dir), args.methods)
    print(f"## {args.task}, {args.model}, k = {args.shots} (class-balanced), seeds {args.seeds}, "
          f"{args.subsample} test items\n")
    print(table.to_markdown(index=False))
    print(f"\nWhole sweep ({len(args.methods)} methods x {len(args.seeds)} seeds): {total_s / 60:.1f} min wall. "
          f"Run records: {output_dir}")


def load_records(output_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(output_dir.glob("*/metrics.json")):
        record = read_run(path.parent)
        training = record.training
        rows.append({
            "method": record.method, "seed": record.seed, "accuracy": record.metrics["accuracy"],
            "macro_f1": record.metrics["macro_f1"], "wall_time_s": record.cost.wall_time_s,
            "train_time_s": training.train_time_s if training else 0.0,
            "trainable": training.trainable_parameters if training else 0,
            "total": training.total_parameters if training else None,
            "train_flops": training.train_flops if training else 0.0,
            "tokens_per_query": record.cost.inference_tokens_per_example,
        })
    if not rows:
        raise SystemExit(f"no run records in {output_dir}")
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    parameters = runs["total"].dropna().max()  # the same model in every run (known from a fine-tuning record)
    icl_tokens = runs.loc[runs["method"] == "icl", "tokens_per_query"].mean()
    rows = []
    for method in methods:
        group = runs[runs["method"] == method]
        flops = group["train_flops"].mean()
        queries = break_even_queries(flops, parameters, icl_tokens, group["tokens_per_query"].mean())
        break_even = f"{queries:,.0f}" if method != "icl" and math.isfinite(queries) else "-"
        rows.append({
            "method": method,
            "seeds": len(group),
            "accuracy": f"{group['accuracy'].mean():.3f} ± {group['accuracy'].std(ddof=1):.3f}",
            "macro-F1": f"{group['macro_f1'].mean():.3f} ± {group['macro_f1'].std(ddof=1):.3f}",
            "train time (s)": f"{group['train_time_s'].mean():.1f}",
            "wall per run (s)": f"{group['wall_time_s'].mean():.1f}",
            "trainable params": f"{int(group['trainable'].mean()):,}",
            "train PFLOP": f"{flops / 1e15:.3f}",
            "tokens / query": f"{group['tokens_per_query'].mean():.0f}",
            "break-even queries": break_even,
        })
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
