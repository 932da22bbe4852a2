"""The model interface: a backend is one class behind three request types, as lm-evaluation-harness's
`lm_eval/api/model.py` and inspect_ai's providers.

- loglikelihood: per request, per continuation, the summed log-probability of the continuation's tokens after
  the context, and whether every one of them is the model's greedy choice;
- loglikelihood_rolling: per window of a document (harness/engine/rolling.py cuts them), the summed
  log-probability of its tokens;
- generate_until: greedy continuations of contexts, each until the end-of-sequence token, a stop string or a
  number of new tokens.

Requests are token ids: the backend's own encode() makes them (harness/engine/request.py), with the context
window and prefix token it states. Everything else happens once, above every backend, in harness/engine/:
grouping requests by their shared prefix, sorting and batching them, the journal that lets an interrupted run
resume, halving a batch that ran out of memory (a backend raises OutOfMemory), counting tokens and time. A
backend may use what the grouping tells it (the HF backend runs a group's shared prefix once and decodes with
continuous batching) or ignore it (tests/fake_backend.py, some thirty lines).

Backends are registered by name (`model.backend`, default `hf`): BackendSpec says how to fingerprint the
weights at planning time (no model loaded, no torch imported) and where the class is, imported only when a
run needs the model.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Hashable, Iterator, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import ModelConfig
    from harness.engine.request import ScoringRequest
    from harness.inputs.prompts import ChatSettings

Scores = list[list[tuple[float, bool]]]  # per request, per continuation: (log-probability, greedy)


class OutOfMemory(Exception):
    """A batch did not fit in the device's memory: the engine halves it (batch_size=auto) and tries again."""


@dataclass(frozen=True)
class GenerationRequest:
    index: int  # the request's place in the run, reported back with its text
    context_ids: tuple[int, ...]
    group: Hashable | None  # requests of one group share their first `shared` context tokens; None: alone
    shared: int


@dataclass(frozen=True)
class Finished:
    """One generation, as it finishes."""

    index: int
    text: str  # decoded, before stop strings are cut
    new_tokens: int
    tokens_forwarded: int  # tokens the backend ran for it (prefix tokens are counted once, by the engine)


class Backend(ABC):
    """A model that scores and generates token ids. Subclasses say whether they can be fine-tuned."""

    trainable: ClassVar[bool] = False
    name: str

    # --- what the request builders need ---------------------------------------------------------------
    @abstractmethod
    def encode(self, text: str | list[str], *, is_context: bool) -> list[int] | list[list[int]]:
        """Token ids of a text, or of each of a list of texts; only a context (never a continuation) may start
        with special tokens."""

    @property
    @abstractmethod
    def token_window(self) -> int:
        """Tokens a request may have: context and continuation (or context and new tokens)."""

    @property
    @abstractmethod
    def prefix_token_id(self) -> int:
        """What a text scored from its first token is conditioned on (BOS, else EOS)."""

    @property
    @abstractmethod
    def vocabulary_size(self) -> int:
        """Entries of one position's distribution (bounds the rolling batches of batch_size=auto)."""

    def render_chat(self, messages: list[dict[str, str]], chat: ChatSettings) -> str:
        """A prompt's messages through the model's chat template (chat_template=true)."""
        raise HarnessError(f"model '{self.name}' has no chat template here (model.backend has no tokenizer)")

    def chat_template_names(self) -> list[str] | None:
        """The model's chat templates by name, or None when it has none."""
        return None

    # --- where it runs, for the engine and the run record -------------------------------------------------
    @property
    def auto_batch_size(self) -> int:
        """Rows generation decodes at once with batch_size=auto (halved on OutOfMemory)."""
        return 16

    @property
    def auto_batch_tokens(self) -> int:
        """The token budget a scoring batch starts at with batch_size=auto (halved on OutOfMemory): positions run,
        padding included (harness/engine/scoring.py)."""
        return 512

    @property
    def device_name(self) -> str:
        """Where the model runs, for the run record: "cpu", "cuda:0", a server's address."""
        return "cpu"

    @property
    def dtype_name(self) -> str:
        """The weights' dtype, for the run record."""
        return "float32"

    @property
    def engine_versions(self) -> dict[str, str]:
        """Versions of what runs the model that this environment does not hold, for the run record."""
        return {}

    # --- the three request types -------------------------------------------------------------------------
    @abstractmethod
    def loglikelihood(self, requests: Sequence[ScoringRequest], shared: int, group: object = None) -> tuple[Scores, int]:
        """(log-probability, greedy) of every continuation of every request, and the tokens run. The first
        `shared` context tokens are the same in every request of the call; calls with the same `group` object come
        from one pass of the engine over one prefix group, so a backend may compute those tokens once for all of
        them (the engine counts them once)."""

    def loglikelihood_rolling(self, windows: Sequence[ScoringRequest]) -> tuple[list[float], int]:
        """The summed log-probability of each window's one continuation after its context, and the tokens run.
        By default through loglikelihood, as each window is a request with one continuation."""
        scores, tokens = self.loglikelihood(windows, shared=0, group=None)
        return [values[0][0] for values in scores], tokens

    @abstractmethod
    def generate_until(self, requests: Sequence[GenerationRequest], max_new_tokens: int, until: Sequence[str],
                       rows: int) -> Iterator[Finished]:
        """Greedy continuations of the requests, in the order given (grouped, longest context first), each
        yielded as it ends: on the end-of-sequence token, once its text holds a stop string of `until`, or at
        max_new_tokens. At most `rows` are decoded at once."""


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend, by where its parts are ("module:function"), imported only when used: planning reads
    `fingerprint` (what identifies the weights, for the run key; it must not import torch), a run that needs the
    model calls `loader` with (ModelConfig, device, reuse) for the Backend."""

    name: str
    fingerprint: str
    loader: str
    trainable: bool = False  # fine-tuning methods need its model's parameters
    serves_trained: bool = False  # not trainable, but loads what the transformers backend trained (merged weights)
    data_parallel: bool = True  # can run in each of several processes (accelerate launch --num_processes N)

    def model_fingerprint(self, config: ModelConfig) -> str:
        return _imported(self.fingerprint)(config)

    def load(self, config: ModelConfig, device: str, reuse: bool = False) -> Backend:
        return _imported(self.loader)(config, device, reuse=reuse)


def _imported(where: str) -> Callable:
    module, _, attribute = where.partition(":")
    return getattr(importlib.import_module(module), attribute)


BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    BACKENDS[spec.name] = spec
    return spec


def backend_spec(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise HarnessError(f"unknown model.backend '{name}' (backends: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[name]


# transformers in this process: exact, trainable, the shared-prefix engine (harness/engine/hf/)
register_backend(BackendSpec(name="hf", fingerprint="harness.engine.hf.fingerprint:model_fingerprint",
                             loader="harness.engine.hf.loading:load_backend", trainable=True))
# an OpenAI-compatible completions server (a vLLM server ...): the harness tokenizes, the server scores
# (harness/engine/openai/)
register_backend(BackendSpec(name="openai", fingerprint="harness.engine.openai.backend:fingerprint",
                             loader="harness.engine.openai.backend:load"))
# vLLM's offline engine in a worker process, from an environment of its own if need be (harness/engine/vllm/): the
# harness tokenizes, vLLM scores and generates; the weights are identified as the transformers backend's
register_backend(BackendSpec(name="vllm", fingerprint="harness.engine.hf.fingerprint:model_fingerprint",
                             loader="harness.engine.vllm.backend:load", data_parallel=False, serves_trained=True))
