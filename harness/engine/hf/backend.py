"""The transformers backend: a causal LM from transformers in this process, behind the model interface
(harness/engine/backend.py). Exact (every score equals a plain full recompute up to float rounding, tested),
trainable (the fine-tuning methods change its weights or give it a soft prompt), and fast where prompts share
a prefix: a group's shared tokens run once (harness/engine/hf/scorer.py), and generation decodes with continuous
batching (harness/engine/hf/decoder.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.engine import tokens
from harness.engine.backend import Finished, GenerationRequest, OutOfMemory, Scores
from harness.engine.hf.decoder import Decoder
from harness.engine.hf.forward import SharedPrefix, encode_prefix
from harness.engine.hf.scorer import score_batch
from harness.engine.request import ScoringRequest

# Generation's rows with batch_size=auto (halved on out-of-memory), where scoring's auto started too before the token
# budget: on a 2-core CPU, 8-shot SST-2 scoring took 7.0 / 6.8 / 7.2 / 8.3 s at 8 / 16 / 32 / 64 rows.
AUTO_BATCH_START = {"cuda": 512, "mps": 256, "cpu": 16}
# Scoring's token budget with batch_size=auto: the positions a batch's rows hold in the keys and values, prefix
# included (harness/engine/scoring.py; halved on out-of-memory). CPU: benchmarks/token_budget.py on 2 cores found
# no budget measurably faster than batches of 8 requests (sentiment 8-shot, PIQA, HellaSwag, ARC-Easy, 100 items:
# 69.3 s in all against 73.0 s at 2,048 positions and 73.5 / 76.2 s at 1,024 / 4,096, with run-to-run noise of
# several seconds on one shape); 2,048 keeps 8-shot prompts at about 8 requests and 0-shot ones at 10 to 20.
# Accelerators: 512 rows of 64 positions, not measured (no GPU was lent).
AUTO_BATCH_TOKENS = {"cuda": 32768, "mps": 16384, "cpu": 2048}


@dataclass
class HFBackend(tokens.TokenizedBackend):
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    max_length: int  # context window in tokens
    add_bos: bool | None  # None: the tokenizer's own default
    soft_prompt: torch.Tensor | None = None  # prompt tuning: (virtual tokens, hidden) prepended to every input
    trainable: ClassVar[bool] = True
    # loglikelihood: the keys and values of the prefix (after the soft prompt) of the group the last call was of, for
    # the group's next batches
    _prefix: SharedPrefix | None = field(default=None, init=False, repr=False)
    _prefix_group: object = field(default=None, init=False, repr=False)

    @property
    def pad_token_id(self) -> int:
        return tokens.pad_token_id(self.tokenizer)

    @property
    def layer_types(self) -> tuple[str, ...]:
        """Attention kind of each layer when the model names them ("full_attention", "sliding_attention")."""
        return tuple(getattr(self.model.config, "layer_types", None) or ())

    @property
    def sliding_window(self) -> int | None:
        """Positions a sliding-window layer sees (itself included), if any layer has such a window."""
        config = self.model.config
        window = getattr(config, "sliding_window", None)
        if not window or getattr(config, "use_sliding_window", True) is False:
            return None
        if self.layer_types and "sliding_attention" not in self.layer_types:
            return None
        return int(window)

    @property
    def token_window(self) -> int:
        """Tokens a prompt may use: the context window less the soft prompt."""
        return self.max_length - (0 if self.soft_prompt is None else self.soft_prompt.shape[0])

    @property
    def auto_batch_size(self) -> int:
        return AUTO_BATCH_START[self.device.type]

    @property
    def auto_batch_tokens(self) -> int:
        return AUTO_BATCH_TOKENS[self.device.type]

    @property
    def device_name(self) -> str:
        return str(self.device)

    @property
    def dtype_name(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[ScoringRequest], shared: int, group: object = None) -> tuple[Scores, int]:
        if group is None or group is not self._prefix_group:  # a new group: its prefix runs (once for all its calls)
            self._prefix = None  # the memory of the previous group's prefix goes before the next one's is made
            self._prefix = encode_prefix(self, requests[0].context_ids[:shared])
            self._prefix_group = group
        try:
            return score_batch(self, self._prefix, shared, requests)
        except torch.OutOfMemoryError:
            self._release()
            raise OutOfMemory from None

    @torch.inference_mode()
    def generate_until(self, requests: Sequence[GenerationRequest], max_new_tokens: int, until: Sequence[str],
                       rows: int) -> Iterator[Finished]:
        try:
            yield from Decoder(self, requests, max_new_tokens, tuple(until)).run(rows)
        except torch.OutOfMemoryError:
            self._release()
            raise OutOfMemory from None

    def _release(self) -> None:
        self._prefix, self._prefix_group = None, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
