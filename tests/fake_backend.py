"""A backend of arithmetic, registered as `model.backend=fake` by tests/test_backend_interface.py: the proof that the
model interface (harness/engine/backend.py) is narrow. A token is a byte of UTF-8; a continuation's log-likelihood
is minus the distance of its bytes from the context's last byte, over 100; a generation answers the first word of
the context's last question. Every call is written down, so the tests can see the engine's batches and groups."""

from __future__ import annotations

from typing import Iterator, Sequence

from harness.config import ModelConfig
from harness.engine.backend import Backend, Finished, GenerationRequest, Scores
from harness.engine.request import ScoringRequest


def loglikelihood(context: Sequence[int], continuation: Sequence[int]) -> float:
    return -sum(abs(token - context[-1]) for token in continuation) / 100


def answer(context: Sequence[int]) -> str:
    question = bytes(context).decode().rsplit("Q: ", 1)[-1]
    return " " + question.split()[0] + "\nand more"


class FakeBackend(Backend):
    token_window = 2048
    prefix_token_id = 0
    vocabulary_size = 256

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, int, int]] = []  # (request type, requests, shared tokens or rows)

    def encode(self, text: str | list[str], *, is_context: bool) -> list[int] | list[list[int]]:
        return [list(item.encode()) for item in text] if isinstance(text, list) else list(text.encode())

    def loglikelihood(self, requests: Sequence[ScoringRequest], shared: int, group: object = None) -> tuple[Scores, int]:
        self.calls.append(("loglikelihood", len(requests), shared))
        return ([[(loglikelihood(r.context_ids, ids), False) for ids in r.continuation_ids] for r in requests],
                sum(len(r.context_ids) - shared for r in requests))

    def generate_until(self, requests: Sequence[GenerationRequest], max_new_tokens: int, until: Sequence[str],
                       rows: int) -> Iterator[Finished]:
        self.calls.append(("generate_until", len(requests), rows))
        for request in requests:
            text = answer(request.context_ids)
            yield Finished(request.index, text, len(text.encode()), len(request.context_ids) - request.shared)


LOADED: list[FakeBackend] = []  # every backend a run loaded, newest last


def fingerprint(config: ModelConfig) -> str:
    return f"fake:{config.path}"


def load(config: ModelConfig, device: str, reuse: bool = False) -> FakeBackend:
    LOADED.append(FakeBackend(config.name))
    return LOADED[-1]
