"""vLLM's offline engine behind the model interface (harness/engine/backend.py), as lm-evaluation-harness's
`--model vllm`: the weights loaded by vLLM, driven by this run, no server.

vLLM runs in a worker process (harness/engine/vllm/worker.py) started with model.vllm_python: the Python of an
environment with vLLM, which need not be this one, since the CPU build pins a transformers the harness does
not accept (docs/models.md says what to install). The harness tokenizes with the model's own tokenizer and
sends token ids, so a prompt is the same tokens here as on the transformers backend; a continuation's
log-likelihood and greedy flag come from vLLM's prompt_logprobs (each prompt token's log-probability and rank),
generation from greedy sampling with the stop strings. vLLM batches and schedules by itself: a call is only how
many requests go to it between two journal writes. It runs whole prompts: the tokens counted are the tokens
sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from harness.config import ModelConfig
from harness.engine import tokens
from harness.engine.backend import Finished, GenerationRequest, Scores
from harness.engine.request import ScoringRequest
from harness.errors import HarnessError

WORKER = Path(__file__).with_name("worker.py")
# Positions one call to loglikelihood may hold with batch_size=auto: vLLM schedules its own batches, so this is the
# work between two journal writes (and what an interrupted run may have to redo).
AUTO_BATCH_TOKENS = 65536
# The engine the last run of this process loaded, kept for the next run that asks for the same model from the same,
# unchanged files: a one-process sweep starts vLLM (minutes on a CPU) once.
_kept: dict[str, VLLMBackend] = {}


class Worker:
    """The vLLM process: one JSON request per line on its standard input, one answer per line on its output. Its
    logs go to this process's standard error."""

    def __init__(self, python: str, environment: dict[str, str]) -> None:
        self.python = python
        try:
            self.process = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True, bufsize=1, env=environment)
        except OSError as error:
            raise HarnessError(f"cannot start model.vllm_python '{python}': {error.strerror or error}") from None

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = self.process.wait()
            raise HarnessError(f"the vLLM worker ({self.python}) stopped with exit code {code}: its messages are "
                               "above")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise HarnessError(f"vLLM: {answer.get('error')}")
        return answer

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.alive:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()


@dataclass
class VLLMBackend(tokens.TokenizedBackend):
    name: str
    worker: Worker
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    add_bos: bool | None
    version: str
    device: str
    dtype: str
    trainable: ClassVar[bool] = False

    @property
    def token_window(self) -> int:
        # a scoring request runs with one generated token after it (vLLM returns prompt log-probabilities of a
        # request that samples): a prompt of the whole context window would be refused
        return self.max_length - 1

    @property
    def auto_batch_size(self) -> int:
        return 256

    @property
    def auto_batch_tokens(self) -> int:
        return AUTO_BATCH_TOKENS

    @property
    def device_name(self) -> str:
        return f"vllm:{self.device}"

    @property
    def dtype_name(self) -> str:
        return self.dtype

    @property
    def engine_versions(self) -> dict[str, str]:
        return {"vllm": self.version}

    def loglikelihood(self, requests: Sequence[ScoringRequest], shared: int, group: object = None) -> tuple[Scores, int]:
        pairs = [[[*request.context_ids, *continuation], len(request.context_ids)]
                 for request in requests for continuation in request.continuation_ids]
        values = iter(self.worker.ask({"op": "score", "requests": pairs})["scores"])
        scores = [[_score(next(values)) for _ in request.continuation_ids] for request in requests]
        return scores, sum(len(ids) for ids, _ in pairs)

    def generate_until(self, requests: Sequence[GenerationRequest], max_new_tokens: int, until: Sequence[str],
                       rows: int) -> Iterator[Finished]:
        for start in range(0, len(requests), rows):
            chunk = requests[start : start + rows]
            answer = self.worker.ask({"op": "generate", "requests": [list(request.context_ids) for request in chunk],
                                      "max_tokens": max_new_tokens, "stop": list(until)})
            for request, text, new_tokens in zip(chunk, answer["texts"], answer["new_tokens"]):
                yield Finished(request.index, text, new_tokens, len(request.context_ids))



def _score(value: list) -> tuple[float, bool]:
    logprob, greedy = value
    return float(logprob), bool(greedy)


def load(config: ModelConfig, device: str, reuse: bool = False) -> VLLMBackend:
    """Start the worker and load the model in it (minutes on a CPU: vLLM compiles the model)."""
    from harness.engine.hf.gguf import is_gguf
    from harness.engine.hf.loading import files_signature, gguf_converted_dir
    from harness.sources.hub import resolve_model_source

    if config.tensor_parallel_size < 1:
        raise HarnessError(f"model.tensor_parallel_size must be >= 1, got {config.tensor_parallel_size}")
    if config.gpu_memory_utilization is not None and not 0 < config.gpu_memory_utilization <= 1:
        raise HarnessError(f"model.gpu_memory_utilization must be in (0, 1], got {config.gpu_memory_utilization}")
    source, local_only = (gguf_converted_dir(config), False) if is_gguf(config) else resolve_model_source(
        config.path, config.revision, "model", hint="use a local path or a named model (python -m harness list)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=config.revision, local_files_only=local_only)
    except Exception as error:  # transformers and tokenizers raise many types; one line says it
        raise HarnessError(f"cannot load the tokenizer of '{config.path}': {' '.join(str(error).split())}") from None
    if config.add_bos and tokenizer.bos_token_id is None:
        raise HarnessError(f"model.add_bos=true but the tokenizer of '{config.name}' has no BOS token")
    settings = {
        "model": source, "tokenizer": source, "revision": config.revision, "dtype": str(config.dtype),
        "max_model_len": config.max_length, "gpu_memory_utilization": config.gpu_memory_utilization,
        "tensor_parallel_size": config.tensor_parallel_size, "enable_prefix_caching": config.enable_prefix_caching,
        "enforce_eager": config.enforce_eager}
    python = config.vllm_python or sys.executable
    key = json.dumps([python, settings, config.add_bos, files_signature(source)])
    if key in _kept and _kept[key].worker.alive:
        print(f"harness: model {config.name} reused from the previous run of this process (vLLM loaded once)",
              file=sys.stderr)
        return _kept[key]
    for kept in _kept.values():  # one engine at a time: it holds the model's memory (on a GPU, most of it)
        kept.worker.close()
    _kept.clear()
    environment = dict(os.environ)
    environment.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines are hundreds per load
    if local_only:  # a cached hub model while the hub is out of reach: vLLM reads the cache without asking
        environment["HF_HUB_OFFLINE"] = "1"
    print(f"harness: loading {config.name} in vLLM ({python}); on a CPU its compilation takes minutes", file=sys.stderr)
    worker = Worker(python, environment)
    try:
        loaded = worker.ask({"op": "load", "settings": settings})
    except BaseException:
        worker.close()
        raise
    _kept[key] = VLLMBackend(name=config.name, worker=worker, tokenizer=tokenizer,
                             max_length=int(loaded["max_model_len"]), add_bos=config.add_bos,
                             version=str(loaded["vllm"]), device=str(loaded["device"]), dtype=str(loaded["dtype"]))
    return _kept[key]
