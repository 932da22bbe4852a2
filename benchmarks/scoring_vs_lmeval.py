"""Scoring speed and agreement: the harness against lm-evaluation-harness (issue #3).

Both tools score the same model (SmolLM2-135M-Instruct, the safetensors copy the harness caches
under $HARNESS_CACHE/models/smollm2-135m), the same 200 SST-2 validation sentences (the first
lines of ../shared/data/sst2/lu_ordered-prompt/dev.jsonl), the same prompt format and the same
demonstrations (the first k lines of ../shared/data/sst2/lu_random-prompt/train.jsonl, for every
query). The script

1. runs both tools at 8 shots, each as a subprocess timed end to end (imports and model load
   included), checks that they built byte-identical prompts and continuations for every example,
   and prints wall times, accuracies, the share of examples whose predictions agree and every
   disagreement with both tools' log-prob margins;
2. runs the harness at 0, 4, 8, 16 and 32 shots and prints wall and scoring times, the ratio
   of the largest to the smallest shot count's time, and the model FLOP utilisation (MFU).

Run it from the repository root, with lm_eval installed (pip install -e '.[bench]'):

    python benchmarks/scoring_vs_lmeval.py                      # the full benchmark (CPU)
    python benchmarks/scoring_vs_lmeval.py --quick              # 20 sentences, 0 and 8 shots
    python benchmarks/scoring_vs_lmeval.py --device cuda        # bf16, both tools
    python benchmarks/scoring_vs_lmeval.py --skip-lmeval --shots 0 8 32 --limit 100

Everything runs offline (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1): lm-eval reads the data with
the `json` builder of `datasets` from a task YAML written into a temporary directory; the data
files are referenced by path, never copied. On cuda both tools run in bfloat16 (the harness's
default there); on cpu both run in float32.

MFU of a harness run = achieved FLOP/s / measured peak FLOP/s, where

    achieved = (2 * N * F + A) / scoring_time_s
    N = parameters without the token embedding (and without an untied output head: the
        harness runs the head only at the scored positions, < 2% of the work here)
    F = tokens_forwarded from metrics.json (real tokens the model ran, padding excluded)
    A = 4 * layers * heads * head_dim * (query, key) pairs   (QK^T and AV, 2 FLOPs per MAC)
        pairs = p(p+1)/2 + sum_i (m_i * p + m_i(m_i+1)/2)

p is the longest common token prefix of all contexts (the demonstrations, encoded once and
cached), m_i = len(context_i) - p the tokens run for example i; a token at position t attends to
t keys. The peak is the best of a few timed square matmuls (2048 fp32 on cpu, 8192 bf16 on cuda)
with torch's default thread count.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers and datasets are imported, here and in the subprocesses
os.environ["HF_DATASETS_OFFLINE"] = "1"

import torch
from common import REPO, ensure_model, run_logged
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from harness.inputs.data import load_split
from harness.inputs.demos import select_demonstrations
from harness.inputs.prompts import Prompt, build_prompt, load_template
from harness.inputs.registry import load_task_node, task_files
from harness.report.load import read_run
from harness.runs.records import RunRecord

DATA_DIR = (REPO / ".." / "shared" / "data" / "sst2").resolve()
TEMPLATE = "review"
COMPARE_SHOTS = 8  # the shot count both tools run
LMEVAL_TASK = "sst2_harness_bench"
LMEVAL_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    validation: {validation}
fewshot_split: train
test_split: validation
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "Review: {{{{sentence}}}}\\nSentiment:"
doc_to_choice: ["negative", "positive"]
doc_to_target: "{{{{label|int}}}}"
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@dataclass
class HarnessRun:
    shots: int
    wall_s: float
    record: RunRecord
    predictions: list[dict[str, Any]]  # per example: id, gold, prediction, scores {label: log-prob}


@dataclass
class LmevalRun:
    wall_s: float
    samples: list[dict[str, Any]]  # lm-eval's logged samples, by doc_id

    def scores(self, index: int) -> list[float]:
        return [float(resp[0]) for resp in self.samples[index]["filtered_resps"]]

    def accuracy(self) -> float:
        return sum(sample["acc"] for sample in self.samples) / len(self.samples)


# -----------------------------------------------------------------------------
# the two tools


def run_harness(shots: int, limit: int, device: str, workdir: Path, batch_size: str = "8") -> HarnessRun:
    output_dir = workdir / f"harness_{shots}shot"
    command = [
        sys.executable, "-m", "harness", "run", "task=sst2", f"task.data_dir={DATA_DIR}", f"template={TEMPLATE}",
        f"shots={shots}", "demos=first_n", f"limit={limit}", f"batch_size={batch_size}", f"device={device}",
        f"output_dir={output_dir}",
    ]
    wall = run_logged(command, workdir / f"harness_{shots}shot.log", cwd=REPO)
    (metrics_file,) = output_dir.glob("*/metrics.json")
    with open(metrics_file.parent / "predictions.jsonl") as f:
        predictions = [json.loads(line) for line in f]
    return HarnessRun(shots, wall, read_run(metrics_file.parent), predictions)


def run_lmeval(shots: int, limit: int, device: str, model_dir: Path, workdir: Path) -> LmevalRun:
    task_dir = workdir / "lmeval_task"
    task_dir.mkdir(exist_ok=True)
    (task_dir / f"{LMEVAL_TASK}.yaml").write_text(LMEVAL_YAML.format(
        task=LMEVAL_TASK,
        train=DATA_DIR / "lu_random-prompt" / "train.jsonl",
        validation=DATA_DIR / "lu_ordered-prompt" / "dev.jsonl",
    ))
    dtype = "bfloat16" if device == "cuda" else "float32"  # what the harness uses on that device
    output_dir = workdir / "lmeval_out"
    command = [
        sys.executable, "-m", "lm_eval", "run", "--model", "hf",
        "--model_args", f"pretrained={model_dir},dtype={dtype}", "--tasks", LMEVAL_TASK,
        "--include_path", str(task_dir), "--num_fewshot", str(shots), "--limit", str(limit),
        "--batch_size", "8", "--device", device, "--log_samples", "--output_path", str(output_dir),
    ]
    wall = run_logged(command, workdir / "lmeval.log", cwd=workdir)
    (samples_file,) = output_dir.rglob(f"samples_{LMEVAL_TASK}_*.jsonl")  # under a folder named after the model
    with open(samples_file) as f:
        samples = sorted((json.loads(line) for line in f), key=lambda sample: sample["doc_id"])
    return LmevalRun(wall, samples)


def harness_prompts(shots: int, limit: int) -> list[Prompt]:
    """The prompts a harness run builds, from the harness's own code (as harness/runs/run.py does)."""
    task = OmegaConf.to_object(load_task_node(task_files()["sst2"]))
    task.data_dir = str(DATA_DIR)
    template = load_template(task, TEMPLATE)
    examples = load_split(task, task.eval_split)[:limit]
    demos = select_demonstrations(load_split(task, task.demo_split), shots, 1, "first_n", list(task.labels))
    return [build_prompt(template, demos, example) for example in examples]


# -----------------------------------------------------------------------------
# FLOPs


def matmul_peak_gflops(device: str, dtype: torch.dtype) -> float:
    """Best GFLOP/s of a few square matmuls on this machine."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):  # the first is a warm-up that rarely wins
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def non_embedding_params(model_dir: Path) -> int:
    with torch.device("meta"):  # shapes only, no weights
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    embeddings = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def attention_flops(context_ids: list[list[int]], model_dir: Path) -> int:
    """QK^T and AV FLOPs with the harness's shared-prefix cache (see the module docstring)."""
    config = AutoConfig.from_pretrained(model_dir)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    first = context_ids[0]
    limit = min(map(len, context_ids)) - 1  # the harness always runs each context's last token
    p = 0
    while p < limit and all(ids[p] == first[p] for ids in context_ids):
        p += 1
    pairs = p * (p + 1) // 2 + sum((m := len(ids) - p) * p + m * (m + 1) // 2 for ids in context_ids)
    return 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * pairs


# -----------------------------------------------------------------------------
# reports


def check_prompts(prompts: list[Prompt], lmeval: LmevalRun, tokenizer: Any) -> None:
    """Print one prompt of each tool and how many examples have identical text and tokens.

    Both tools tokenize the context alone with the tokenizer's default special tokens; they differ
    in the continuation, which lm-eval cuts from the tokens of context + continuation.
    """
    same_text = same_tokens = 0
    for prompt, sample in zip(prompts, lmeval.samples):
        arguments = [sample["arguments"][f"gen_args_{i}"] for i in range(len(sample["arguments"]))]
        contexts = {arg["arg_0"] for arg in arguments}
        continuations = tuple(arg["arg_1"] for arg in arguments)
        if contexts == {prompt.context()} and continuations == prompt.continuations:
            same_text += 1
            # lm-eval: continuation ids = tokens(context + continuation) minus tokens(context); harness: tokens(continuation)
            context = tokenizer(prompt.context())["input_ids"]
            lmeval_ids = [tokenizer(prompt.context() + c)["input_ids"][len(context):] for c in continuations]
            harness_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
            same_tokens += lmeval_ids == harness_ids
    first = lmeval.samples[0]["arguments"]
    print("One prompt, as each tool built it (Python repr):\n")
    print("```")
    print(f"harness context:       {prompts[0].context()!r}")
    print(f"lm-eval context:       {first['gen_args_0']['arg_0']!r}")
    print(f"harness continuations: {list(prompts[0].continuations)!r}")
    print(f"lm-eval continuations: {[first[f'gen_args_{i}']['arg_1'] for i in range(len(first))]!r}")
    print("```\n")
    n = len(prompts)
    print(f"Byte-identical context and continuations: {same_text}/{n} examples; "
          f"identical continuation token ids as each tool tokenizes them: {same_tokens}/{n}.\n")


def compare(harness: HarnessRun, lmeval: LmevalRun, lmeval_version: str, model_dir: Path) -> None:
    n = len(harness.predictions)
    labels = list(harness.predictions[0]["scores"])
    print(f"## {COMPARE_SHOTS}-shot, {n} SST-2 validation sentences, {harness.record.environment['device']}, "
          f"{harness.record.environment['dtype']}\n")
    print("| tool | wall time (s) | scoring time (s) | accuracy |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| harness | {harness.wall_s:.1f} | {harness.record.cost.scoring_time_s:.1f} | "
          f"{harness.record.metrics['accuracy']:.3f} |")
    print(f"| lm-eval {lmeval_version} | {lmeval.wall_s:.1f} | - | {lmeval.accuracy():.3f} |\n")
    print(f"Wall time includes start-up and model load. The harness is {lmeval.wall_s / harness.wall_s:.2f}x "
          f"faster end to end.\n")
    check_prompts(harness_prompts(COMPARE_SHOTS, n), lmeval, AutoTokenizer.from_pretrained(model_dir))

    disagreements = []
    largest_gap = 0.0
    for index, prediction in enumerate(harness.predictions):
        ours = [prediction["scores"][label] for label in labels]
        theirs = lmeval.scores(index)
        largest_gap = max(largest_gap, *(abs(a - b) for a, b in zip(ours, theirs)))
        their_label = labels[max(range(len(theirs)), key=theirs.__getitem__)]  # ties to the first, like np.argmax
        if their_label != prediction["prediction"]:
            disagreements.append((prediction, ours, their_label, theirs))
    agree = n - len(disagreements)
    print(f"Predictions agree on {agree}/{n} examples ({agree / n:.1%}); the largest difference between the "
          f"tools' log-probs of one label is {largest_gap:.2e}.\n")
    if disagreements:
        print(f"Disagreements (margin = log p({labels[1]}) - log p({labels[0]})):\n")
        print("| id | gold | harness | harness margin | lm-eval | lm-eval margin |")
        print("| --- | --- | --- | ---: | --- | ---: |")
        for prediction, ours, their_label, theirs in disagreements:
            print(f"| {prediction['id']} | {prediction['gold']} | {prediction['prediction']} | "
                  f"{ours[1] - ours[0]:+.5f} | {their_label} | {theirs[1] - theirs[0]:+.5f} |")
        print()


def sweep_table(runs: list[HarnessRun], model_dir: Path, device: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    params = non_embedding_params(model_dir)
    dtype = runs[0].record.environment["dtype"]
    peak = matmul_peak_gflops(device, getattr(torch, dtype))
    n = runs[0].record.n
    print(f"## Harness, {n} sentences, first_n demonstrations, {device}, {dtype}\n")
    print("| shots | wall time (s) | scoring time (s) | tokens forwarded | accuracy | GFLOP | GFLOP/s | MFU |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        contexts = [tokenizer(prompt.context())["input_ids"] for prompt in harness_prompts(run.shots, n)]
        flops = 2 * params * run.record.cost.tokens_forwarded + attention_flops(contexts, model_dir)
        achieved = flops / run.record.cost.scoring_time_s / 1e9
        print(f"| {run.shots} | {run.wall_s:.1f} | {run.record.cost.scoring_time_s:.1f} | "
              f"{run.record.cost.tokens_forwarded:,} | {run.record.metrics['accuracy']:.3f} | {flops / 1e9:.1f} | "
              f"{achieved:.1f} | {achieved / peak:.1%} |")
    low, high = runs[0], runs[-1]
    print(f"\n{high.shots}-shot / {low.shots}-shot time: {high.wall_s / low.wall_s:.2f}x wall, "
          f"{high.record.cost.scoring_time_s / low.record.cost.scoring_time_s:.2f}x scoring.")
    print(f"Peak: {peak:.1f} GFLOP/s (best square {dtype} matmul, {torch.get_num_threads()} threads); "
          f"{params / 1e6:.1f}M non-embedding parameters. Wall time includes start-up and model load.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 4, 8, 16, 32], help="harness sweep")
    parser.add_argument("--limit", type=int, default=200, help="number of validation sentences")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--skip-lmeval", action="store_true", help="run the harness sweep only")
    parser.add_argument("--harness-batch-size", default="8",
                        help="the harness's batch_size (8, as lm-eval's; or auto: 16 rows on CPU, 512 on CUDA)")
    parser.add_argument("--quick", action="store_true", help="a fast check: --limit 20 --shots 0 8")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.shots = 20, [0, COMPARE_SHOTS]
    if not args.skip_lmeval and importlib.util.find_spec("lm_eval") is None:
        sys.exit("lm_eval is not installed: pip install -e '.[bench]' (or use --skip-lmeval)")
    if not DATA_DIR.is_dir():
        sys.exit(f"data not found: {DATA_DIR}")

    model_dir = ensure_model()
    with tempfile.TemporaryDirectory(prefix="scoring_vs_lmeval_") as tmp:
        workdir = Path(tmp)
        shots = sorted(set(args.shots) | (set() if args.skip_lmeval else {COMPARE_SHOTS}))
        runs = {k: run_harness(k, args.limit, args.device, workdir, args.harness_batch_size) for k in shots}
        if not args.skip_lmeval:
            lmeval = run_lmeval(COMPARE_SHOTS, args.limit, args.device, model_dir, workdir)
            print()
            compare(runs[COMPARE_SHOTS], lmeval, importlib.metadata.version("lm_eval"), model_dir)
        sweep_table([runs[k] for k in sorted(set(args.shots))], model_dir, args.device)


if __name__ == "__main__":
    main()
