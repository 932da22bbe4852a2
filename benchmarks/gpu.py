"""GPU figures: scoring speed, the fine-tuning table and a data-parallel run, on CUDA in bf16.

Two steps, because the machine with the GPU (the device tool's) reaches no network, holds some of the
harness's packages at other versions, and takes at most 64 MiB along with the checkout:

    python benchmarks/gpu.py prepare      # here: .gpu/ (ignored by git), about 25 MB
    python benchmarks/gpu.py run          # there, with .gpu carried: prints the tables, writes $OUT/gpu.md

`prepare` puts in .gpu/: wheels of the packages the device image lacks or has at another version than this
environment (installed there with --no-deps into /tmp/site), SmolLM2-135M-Instruct's config and tokenizer
(not its weights: 538 MB in fp32 do not travel), and the Rotten Tomatoes corpus entry of the harness
cache. `run` builds the model with that architecture and random weights in bf16 (speed and memory do not
depend on the weights' values; accuracy printed there means nothing), measures the GPU's bf16 matmul
rate, then runs through the harness command line:

1. scoring: task=sentiment at 0, 8 and 32 shots (1,306 test items): scoring time, tokens forwarded per
   second, MFU (2 x non-embedding parameters per forwarded token, over the measured matmul rate) and
   peak memory;
2. fine-tuning at k=16 with each method's shipped settings: training time, training tokens per second,
   peak memory, then scoring with the trained weights;
3. data-parallel: the 8-shot run again with `accelerate launch` and 2 processes (on one GPU both share
   it); predictions and the largest score difference against the one-process run.

On a CPU, `run --device cpu --quick` checks the script itself (fp32, 64 items, one method).
The device-tool command (timeout 540 s; the whole run takes about 4 minutes on an H200 by design):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/wheels/*.whl && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import commit, ensure_model

from harness.runs.launch import launch_command

REPO = Path(__file__).resolve().parent.parent
PREPARED = REPO / ".gpu"
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja")
# What the harness imports that the device image lacks (datasets, evaluate, hydra-core, gguf) with what they
# need in turn, and the packages whose version there differs from what the harness is tested with.
CARRIED = ("datasets", "dill", "multiprocess", "evaluate", "hydra-core", "omegaconf", "antlr4-python3-runtime",
           "gguf", "transformers", "tokenizers", "huggingface-hub", "peft", "accelerate")
SOURCE_ONLY = ("antlr4-python3-runtime",)  # no wheel on PyPI for the version omegaconf needs: built here (pure Python)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
SHOTS = (0, 8, 32)
METHODS = ("lora", "ia3", "bitfit", "prompt_tuning", "full")


def prepare() -> None:
    """Here: the wheels, the model's architecture and tokenizer, and the corpus, in .gpu/."""
    from importlib import metadata

    from harness.sources.cache import cache_dir

    wheels = PREPARED / "wheels"
    shutil.rmtree(PREPARED, ignore_errors=True)
    wheels.mkdir(parents=True)
    pins = [f"{name}=={metadata.version(name)}" for name in CARRIED]
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels),
                    *(pin for pin in pins if pin.split("==")[0] not in SOURCE_ONLY)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    *(pin for pin in pins if pin.split("==")[0] in SOURCE_ONLY)], check=True)
    model = ensure_model()
    (PREPARED / "model").mkdir()
    for name in MODEL_FILES:
        if (model / name).exists():
            shutil.copy2(model / name, PREPARED / "model" / name)
    corpus = cache_dir() / "assets" / "rotten-tomatoes-critics"
    shutil.copytree(corpus, PREPARED / "cache" / "assets" / corpus.name)
    size = sum(path.stat().st_size for path in PREPARED.rglob("*") if path.is_file())
    print(f"{PREPARED}: {size / 2**20:.1f} MiB ({len(pins)} wheels, the model's config and tokenizer, the corpus)")


def run(device: str, quick: bool) -> None:
    import torch

    dtype = "bfloat16" if device == "cuda" else "float32"
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / "harness-gpu"
    shutil.rmtree(scratch, ignore_errors=True)
    model_dir = _random_model(scratch / "smollm2-135m-random", getattr(torch, dtype))
    environment = {**os.environ, "HARNESS_CACHE": str(_writable_cache(scratch)), "HF_HUB_OFFLINE": "1"}
    base = [f"model={model_dir}", f"model.dtype={dtype}", f"device={device}", "task=sentiment"]
    if quick:
        base.append("limit=64")
    peak = _matmul_rate(device, getattr(torch, dtype))
    parameters = _non_embedding_parameters(model_dir)
    lines = [f"# harness on {_device_name(device)}, {dtype}, commit {commit()}",
             f"measured matmul rate: {peak / 1e12:.1f} TFLOP/s; model: SmolLM2-135M architecture, random "
             f"weights, {parameters / 1e6:.1f}M non-embedding parameters", ""]

    lines += ["## Scoring", "", "| shots | items | wall (s) | scoring (s) | tokens forwarded | tokens/s | MFU | "
              "peak memory (MiB) |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for shots in SHOTS[:2] if quick else SHOTS:
        record, wall = _harness(base + [f"shots={shots}"], scratch / f"score{shots}", environment)
        cost = record["cost"]
        rate = cost["tokens_forwarded"] / cost["scoring_time_s"]
        lines.append(f"| {shots} | {record['n']} | {wall:.1f} | {cost['scoring_time_s']:.2f} | "
                     f"{cost['tokens_forwarded']:,} | {rate:,.0f} | {2 * parameters * rate / peak:.1%} | "
                     f"{cost['peak_memory_mb']:,.0f} |")

    lines += ["", "## Fine-tuning at k = 16", "", "| method | steps | train (s) | train tokens/s | "
              "peak memory in training (MiB) | scoring (s) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for method in METHODS[:1] if quick else METHODS:
        record, _ = _harness(base + [f"method={method}", "shots=16", "method.save_weights=false"],
                             scratch / f"train-{method}", environment)
        training = record["training"]
        lines.append(f"| {method} | {training['steps']} | {training['train_time_s']:.1f} | "
                     f"{training['tokens_seen'] / training['train_time_s']:,.0f} | {training['peak_memory_mb']:,.0f} | "
                     f"{record['cost']['scoring_time_s']:.2f} |")

    lines += ["", "## Data-parallel (accelerate launch, 2 processes)", ""]
    launch = launch_command(2, None if device == "cuda" else max(1, (os.cpu_count() or 2) // 2))
    try:
        split, wall = _harness(base + ["shots=8"], scratch / "split", environment, start=launch)
    except RuntimeError as error:
        lines.append(f"failed: {error}")
    else:
        one = _predictions(scratch / "score8")
        two = _predictions(scratch / "split")
        differing = sum(a["prediction"] != b["prediction"] for a, b in zip(one, two))
        largest = max(abs(a["scores"][label] - b["scores"][label]) for a, b in zip(one, two) for label in a["scores"])
        lines.append(f"{split['n']} items in {wall:.1f} s wall ({split['cost']['scoring_time_s']:.2f} s scoring, "
                     f"the slower process); predictions unlike the one-process run's: {differing}; largest "
                     f"|difference| of a label's log-probability: {largest:.2e}")
    text = "\n".join(lines)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu.md").write_text(text + "\n")


def _random_model(target: Path, dtype) -> Path:
    """SmolLM2-135M-Instruct's architecture and tokenizer with random weights (seed 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source = PREPARED / "model"
    if not (source / "config.json").exists():
        sys.exit(f"{source} is missing: run `python benchmarks/gpu.py prepare` here first and carry .gpu")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=dtype)
    model.save_pretrained(target)
    for name in MODEL_FILES:
        if name != "config.json" and (source / name).exists():
            shutil.copy2(source / name, target / name)
    return target


def _writable_cache(scratch: Path) -> Path:
    cache = scratch / "cache"
    if (PREPARED / "cache").exists():
        shutil.copytree(PREPARED / "cache", cache)
    return cache


def _harness(overrides: list[str], output: Path, environment: dict, start: list[str] | None = None):
    """One `harness run` (optionally under a launcher): its record and wall time."""
    command = [*(start or [sys.executable]), "-m", "harness", "run", *overrides, f"output_dir={output}"]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` exited {done.returncode}: {done.stderr.strip()[-1500:]}")
    [record] = output.glob("*/metrics.json")
    return json.loads(record.read_text()), wall


def _predictions(output: Path) -> list[dict]:
    [path] = output.glob("*/predictions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _matmul_rate(device: str, dtype) -> float:
    """FLOP/s of the best of ten square matrix products after three warm-ups (1024 on a CPU, 8192 on a GPU)."""
    import torch

    size = 8192 if device == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for attempt in range(13):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        if attempt >= 3:
            best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best


def _non_embedding_parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as weights:
            for name in weights.keys():
                if "embed" not in name and "lm_head" not in name:
                    total += _product(weights.get_slice(name).get_shape())
    return total


def _product(shape: list[int]) -> int:
    result = 1
    for size in shape:
        result *= size
    return result


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="here: write .gpu/ for the device machine")
    running = commands.add_parser("run", help="there: the benchmark")
    running.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    running.add_argument("--quick", action="store_true", help="64 items, two shot counts, one method")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare()
    else:
        run(args.device, args.quick)


if __name__ == "__main__":
    main()
