"""A stand-in for vLLM's offline engine in the tests of model.backend=vllm (tests/test_vllm_backend.py), so that the
real worker (harness/engine/vllm/worker.py) runs without vLLM installed: the same names the worker uses (LLM,
SamplingParams, prompt_logprobs with ranks, greedy generation with stop strings), answered by a transformers
model in float64 as vLLM's would be. The real vLLM is checked by benchmarks/vllm_check.py (docs/results/backends.md).

FAKE_VLLM_FAIL=load makes loading fail as vLLM does on a bad model; FAKE_VLLM_EXIT_AFTER=N ends the process after
N generate calls, as a crashed engine would."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

__version__ = "0.0-fake"
CACHE_BLOCK = 4


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    prompt_logprobs: int | None = None
    stop: list[str] | None = None
    include_stop_str_in_output: bool = False
    skip_reading_prefix_cache: bool | None = None
    detokenize: bool = True


@dataclass
class Logprob:
    logprob: float
    rank: int


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]


@dataclass
class RequestOutput:
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)
    num_cached_tokens: int = 0


class _ModelConfig:
    def __init__(self, max_model_len: int) -> None:
        self.max_model_len = max_model_len


class _Engine:
    def __init__(self, max_model_len: int) -> None:
        self.model_config = _ModelConfig(max_model_len)


class LLM:
    def __init__(self, model: str, tokenizer: str, max_model_len: int | None = None, **settings: Any) -> None:
        if os.environ.get("FAKE_VLLM_FAIL") == "load":
            raise ValueError(f"cannot load {model}")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float64).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.llm_engine = _Engine(max_model_len or self.model.config.n_positions)
        self.settings = settings
        self.calls = 0
        self.cached: list[list[int]] = []  # prompts seen: a prefix cache, in blocks of CACHE_BLOCK tokens

    def generate(self, prompts: list[dict], params: SamplingParams, use_tqdm: bool = True) -> list[RequestOutput]:
        self.calls += 1
        if os.environ.get("FAKE_VLLM_EXIT_AFTER") and self.calls > int(os.environ["FAKE_VLLM_EXIT_AFTER"]):
            os._exit(3)
        return [self._one(prompt["prompt_token_ids"], params) for prompt in prompts]

    @torch.no_grad()
    def _one(self, ids: list[int], params: SamplingParams) -> RequestOutput:
        if len(ids) + 1 > self.llm_engine.model_config.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens is longer than max_model_len")
        prompt_logprobs = None
        # as vLLM: whole blocks of an earlier prompt are served from the cache (never the last token), and their
        # positions get no logits: their entries here are wrong on purpose
        served = 0
        if self.settings.get("enable_prefix_caching") and not params.skip_reading_prefix_cache:
            for seen in self.cached:
                common = next((i for i, (a, b) in enumerate(zip(seen, ids)) if a != b), min(len(seen), len(ids)))
                served = max(served, min(common, len(ids) - 1) // CACHE_BLOCK * CACHE_BLOCK)
        self.cached.append(list(ids))
        if params.prompt_logprobs is not None:
            logprobs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0], dim=-1)
            prompt_logprobs = [None]
            for position in range(1, len(ids)):
                row = logprobs[position - 1]
                rank = int((row > row[ids[position]]).sum()) + 1
                entry = Logprob(float(row[ids[position]]), rank) if position - 1 >= served else Logprob(0.0, 1)
                prompt_logprobs.append({ids[position]: entry})
        generated: list[int] = []
        text = ""
        for _ in range(params.max_tokens):
            token = int(self.model(torch.tensor([ids + generated])).logits[0, -1].argmax())
            if token == self.tokenizer.eos_token_id:
                break
            generated.append(token)
            text = self.tokenizer.decode(generated)
            stops = [text.index(stop) + len(stop) for stop in params.stop or [] if stop in text]
            if stops:
                text = text[: min(stops)]
                break
        return RequestOutput(prompt_logprobs, [CompletionOutput(text, generated)], num_cached_tokens=served)
