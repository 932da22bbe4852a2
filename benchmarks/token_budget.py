"""The token budget of batch_size=auto on this machine: scoring seconds of each shape at several budgets, against
batches of 8 requests (the default).

    python benchmarks/token_budget.py                      # the shapes and budgets below, 100 items each
    python benchmarks/token_budget.py --budgets 256 512 --shapes piqa:0

Each run scores in this process (SmolLM2-135M-Instruct on the CPU, loaded once, a warm-up run first); the
figure is the run's scoring seconds (requests, passes, scores), best of --repeats. The budget with the lowest
total is what harness/engine/hf/backend.py's AUTO_BATCH_TOKENS should say for this device. Run nothing else
meanwhile.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from common import MODEL, REPO, commit

sys.path.insert(0, str(REPO / "tests"))

SHAPES = ["sentiment:0", "sentiment:8", "arc_easy:0", "piqa:0", "hellaswag:0", "mmlu:5"]
BUDGETS = [256, 512, 1024, 2048]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=SHAPES, help="task:shots")
    parser.add_argument("--budgets", nargs="*", type=int, default=BUDGETS)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    arguments = parser.parse_args()
    from harness.engine.backend import backend_spec
    from harness.runs.run import run
    from helpers import compose

    work = Path(tempfile.mkdtemp(prefix="token-budget-"))
    settings = {"batch_size=8": ["batch_size=8"],
                **{f"{budget} tokens": ["batch_size=auto", f"batch_tokens={budget}"] for budget in arguments.budgets}}
    seconds: dict[tuple[str, str], float] = {}

    def scoring_seconds(shape: str, extra: list[str], limit: int) -> float:
        task, _, shots = shape.partition(":")
        config = compose(f"task={task}", f"model={MODEL}", f"shots={shots or 0}", f"limit={limit}", "device=cpu",
                         f"output_dir={work}", "rerun=true", *extra)
        backend_spec("hf").load(config.model, "cpu", reuse=True)  # loaded once, outside the timings
        return run(config, progress=False).record.cost.scoring_time_s

    for shape in arguments.shapes:
        scoring_seconds(shape, ["batch_size=8"], 8)  # warm-up: the data's and the model's first use
        for name, extra in settings.items():
            seconds[shape, name] = min(scoring_seconds(shape, extra, arguments.limit) for _ in range(arguments.repeats))
            print(f"{shape} {name}: {seconds[shape, name]:.1f} s", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{MODEL} on the CPU, {torch.get_num_threads()} threads, {arguments.limit} items, harness at {commit()}; "
          "scoring seconds")
    print("| shape | " + " | ".join(settings) + " |")
    print("| --- |" + " ---: |" * len(settings))
    for shape in arguments.shapes:
        print(f"| {shape} | " + " | ".join(f"{seconds[shape, name]:.1f}" for name in settings) + " |")
    totals = {name: sum(seconds[shape, name] for shape in arguments.shapes) for name in settings}
    print("| total | " + " | ".join(f"{total:.1f}" for total in totals.values()) + " |")


if __name__ == "__main__":
    main()
