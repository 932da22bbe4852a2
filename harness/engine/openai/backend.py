"""An OpenAI-compatible completions server behind the model interface (harness/engine/backend.py), as
lm-evaluation-harness's `local-completions`: a vLLM server, or any endpoint that returns a prompt's
log-probabilities.

The harness tokenizes (the model's own tokenizer, read where model.tokenizer or model.path says) and sends token
ids, so a prompt is the same tokens here as on the transformers backend. A continuation's log-likelihood is read
from `echo` + `logprobs` over context + continuation (one generated token, ignored), its greedy flag from each
position's top log-probability; generation is /v1/completions at temperature 0 with the stop strings. Requests go
at most model.concurrency at a time, each with a timeout, retried on what a busy server answers
(harness/engine/openai/client.py). The server runs whole prompts: the tokens counted are the tokens sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from harness.config import ModelConfig
from harness.engine import tokens
from harness.engine.backend import Finished, GenerationRequest, Scores
from harness.engine.openai.client import Client
from harness.engine.request import ScoringRequest
from harness.errors import HarnessError

# Positions a call to loglikelihood may hold with batch_size=auto: a server batches by itself, so a call is only
# how many requests are in flight between two journal writes.
AUTO_BATCH_TOKENS = 65536


@dataclass
class OpenAIBackend(tokens.TokenizedBackend):
    name: str
    client: Client
    api_model: str
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    add_bos: bool | None
    trainable: ClassVar[bool] = False

    @property
    def token_window(self) -> int:
        # a scoring request is sent with one token to generate after it (servers refuse max_tokens=0 with echo): a
        # prompt of the whole context window would be refused
        return self.max_length - 1

    @property
    def auto_batch_size(self) -> int:
        return self.client.concurrency

    @property
    def auto_batch_tokens(self) -> int:
        return AUTO_BATCH_TOKENS

    @property
    def device_name(self) -> str:
        return self.client.base_url

    @property
    def dtype_name(self) -> str:
        return "as served"

    def loglikelihood(self, requests: Sequence[ScoringRequest], shared: int, group: object = None) -> tuple[Scores, int]:
        pairs = [(request.context_ids, continuation) for request in requests for continuation in request.continuation_ids]
        values = iter(self.client.map(self._scored, pairs))
        scores = [[next(values) for _ in request.continuation_ids] for request in requests]
        return scores, sum(len(context) + len(continuation) for context, continuation in pairs)

    def _scored(self, pair: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[float, bool]:
        context, continuation = pair
        answer = self.client.post("completions", {
            "model": self.api_model, "prompt": [*context, *continuation], "max_tokens": 1, "temperature": 0.0,
            "echo": True, "logprobs": 1})
        logprobs = _choice(answer).get("logprobs") or {}
        token_logprobs, top = logprobs.get("token_logprobs"), logprobs.get("top_logprobs")
        end = len(context) + len(continuation)
        if not isinstance(token_logprobs, list) or not isinstance(top, list) or min(len(token_logprobs), len(top)) < end:
            raise HarnessError(f"the server at {self.client.base_url} did not return the prompt's log-probabilities "
                               "(completions with echo and logprobs): it cannot score log-likelihood tasks, only "
                               "generate (short-answer tasks)")
        positions = range(len(context), end)
        try:
            value = sum(float(token_logprobs[position]) for position in positions)
            greedy = all(float(token_logprobs[position]) >= max(map(float, top[position].values()))
                         for position in positions)
        except (TypeError, ValueError, AttributeError):
            raise HarnessError(f"the server at {self.client.base_url} answered log-probabilities that are not "
                               f"numbers: {json.dumps(logprobs)[:200]}") from None
        return value, greedy

    def generate_until(self, requests: Sequence[GenerationRequest], max_new_tokens: int, until: Sequence[str],
                       rows: int) -> Iterator[Finished]:
        def generated(request: GenerationRequest) -> Finished:
            answer = self.client.post("completions", {
                "model": self.api_model, "prompt": list(request.context_ids), "max_tokens": max_new_tokens,
                "temperature": 0.0, **({"stop": list(until)} if until else {})})
            text = _choice(answer).get("text")
            if not isinstance(text, str):
                raise HarnessError(f"the server at {self.client.base_url} answered a completion without text")
            usage = answer.get("usage") or {}
            new_tokens = usage.get("completion_tokens")
            if not isinstance(new_tokens, int):
                new_tokens = len(self.encode(text, is_context=False))
            return Finished(request.index, text, new_tokens, len(request.context_ids))

        yield from self.client.map(generated, requests, most=rows)


def _choice(answer: dict[str, Any]) -> dict[str, Any]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise HarnessError(f"the server answered without choices: {json.dumps(answer)[:200]}")
    return choices[0]


def _client(config: ModelConfig) -> Client:
    if not config.base_url:
        raise HarnessError("model.backend=openai needs model.base_url: the server's address up to /v1, e.g. "
                           "http://127.0.0.1:8000/v1")
    if config.concurrency < 1 or config.timeout_s <= 0 or config.max_retries < 0:
        raise HarnessError("model.concurrency must be >= 1, model.timeout_s > 0 and model.max_retries >= 0")
    return Client(config.base_url, config.api_key_env, config.timeout_s, config.max_retries, config.concurrency)


def _served(config: ModelConfig, client: Client) -> dict[str, Any]:
    """The server's entry (/v1/models) for the model the run names, or its only model when the run names none."""
    listed = client.get("models").get("data")
    if not isinstance(listed, list) or not all(isinstance(entry, dict) for entry in listed):
        raise HarnessError(f"the server at {config.base_url} answered /models without a list of models")
    names = [str(entry.get("id")) for entry in listed]
    if config.api_model is None:
        if len(listed) != 1:
            raise HarnessError(f"the server at {config.base_url} serves {len(listed)} models ({', '.join(names)}): "
                               "name one with model.api_model")
        return listed[0]
    if config.api_model not in names:
        raise HarnessError(f"the server at {config.base_url} does not serve '{config.api_model}' (it serves: "
                           f"{', '.join(names) or 'nothing'})")
    return listed[names.index(config.api_model)]


def fingerprint(config: ModelConfig) -> str:
    """What identifies the run's model: the served model as the server names it (its id, and the path or hub id
    it was loaded from where the server says, as vLLM does) and the tokenizer the harness reads. The server's
    address is not part of it: the same model served elsewhere gives the same numbers."""
    served = _served(config, _client(config))
    identity = [served.get("id"), served.get("root"), _tokenizer_fingerprint(_tokenizer_config(config))]
    return "openai:" + hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()


def _tokenizer_fingerprint(config: ModelConfig) -> str:
    """A local directory: the hashes of its tokenizer's files alone (a directory with only a tokenizer is enough,
    and a model's weights, gigabytes the server holds anyway, are not read); a hub id or a packaged model: what
    identifies it for the transformers backend."""
    from harness.engine.hf.fingerprint import TOKENIZER, model_fingerprint
    from harness.sources.digests import file_digest

    local = Path(config.path).expanduser()
    if not local.is_dir():
        return model_fingerprint(config)
    files = sorted(path for path in local.iterdir() if path.is_file() and _is_tokenizer_file(path.name))
    if not {path.name for path in files} & set(TOKENIZER):
        raise HarnessError(f"{local} has no tokenizer files ({', '.join(TOKENIZER[:2])}, ...): set model.tokenizer to "
                           "the served model's directory or hub id")
    return "files:" + hashlib.sha256(json.dumps([[path.name, file_digest(path)] for path in files]).encode()).hexdigest()


def _is_tokenizer_file(name: str) -> bool:
    return name.startswith(("tokenizer", "special_tokens_map", "added_tokens", "chat_template")) or name in (
        "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model")


def _tokenizer_config(config: ModelConfig) -> ModelConfig:
    """Where the tokenizer is: model.tokenizer (a directory or hub id) when set, else the model's own path."""
    if config.tokenizer is None:
        return config
    return ModelConfig(name=config.name, path=config.tokenizer)


def load(config: ModelConfig, device: str, reuse: bool = False) -> OpenAIBackend:
    from harness.engine.hf.gguf import is_gguf
    from harness.engine.hf.loading import gguf_converted_dir
    from harness.sources.hub import resolve_model_source

    client = _client(config)
    served = _served(config, client)
    where = _tokenizer_config(config)
    source, local_only = (gguf_converted_dir(where), False) if is_gguf(where) else resolve_model_source(
        where.path, where.revision, "tokenizer", hint="set model.tokenizer to the served model's directory or hub id")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=where.revision, local_files_only=local_only)
    except Exception as error:  # transformers and tokenizers raise many types; one line says it
        raise HarnessError(f"cannot load the tokenizer of '{where.path}': {' '.join(str(error).split())}") from None
    max_length = config.max_length or served.get("max_model_len")
    if not isinstance(max_length, int) or max_length < 1:
        raise HarnessError(f"the server at {config.base_url} does not say its context window: set model.max_length")
    return OpenAIBackend(name=config.name, client=client, api_model=str(served["id"]), tokenizer=tokenizer,
                         max_length=max_length, add_bos=config.add_bos)
