"""The HF backend's greedy decoding: continuous batching over the shared forward pass (harness/engine/hf/forward.py).

Each row of the batch holds one request, and a request that stops hands its row to the next at once; requests
of a prefix group (the engine says which, and how many tokens they share) run their prefix once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable, Iterator, Sequence

import torch

from harness.engine.backend import Finished, GenerationRequest
from harness.engine.hf.forward import KeyValues, SharedPrefix, buffer_cache, encode_prefix, forward_rows

if TYPE_CHECKING:
    from harness.engine.hf.backend import HFBackend


class _Prefixes:
    """The prefix each group of requests shares (its length given by the engine, plus the soft prompt after prompt
    tuning), run when the group's first request is admitted and let go after its last. Requests alone in their
    group come as group None, decoded without a prefix so that their queries run together (demonstrations
    retrieved per item make every group one request)."""

    def __init__(self, lm: HFBackend, requests: Sequence[GenerationRequest]) -> None:
        self.lm = lm
        self.length: dict[Hashable | None, int] = {None: 0}
        self.first: dict[Hashable | None, tuple[int, ...]] = {None: ()}
        for request in requests:
            if request.group is not None and request.group not in self.first:
                self.length[request.group] = request.shared
                self.first[request.group] = request.context_ids[: request.shared]
        self.remaining: Counter[Hashable | None] = Counter(request.group for request in requests)
        self.encoded: dict[Hashable | None, SharedPrefix | None] = {}

    def take(self, group: Hashable | None, requests: int) -> tuple[SharedPrefix | None, int]:
        """The group's prefix and its length in context tokens, for `requests` of its requests."""
        if group not in self.encoded:
            self.encoded[group] = encode_prefix(self.lm, self.first[group])
        prefix = self.encoded[group]
        self.remaining[group] -= requests
        if not self.remaining[group]:
            del self.encoded[group]
        return prefix, self.length[group]


@dataclass
class _Row:
    index: int  # the request's
    tokens: list[int]  # generated so far
    forwarded: int  # tokens this request ran: its query, then one per decoding step


class Decoder:
    """Greedy decoding of many requests on a few rows of per-layer key/value buffers.

    A row holds one request: its prefix and query keys and values (written by the forward pass that reads the
    request's first token, run for several arriving requests at once) in its first columns, then one column per
    decoding step, which every row writes at the same index. A row whose request finishes waits until half the
    rows are free, then they all take the next requests together, in one pass: most short answers end on
    their first or second token, and a pass over several rows costs far less than a pass for each (SmolLM2-135M
    on this 2-core CPU: 0.11 s for one row of one token, 0.24-0.32 s for 3 to 8). A waiting row runs a stand-in
    token at each step and keeps its masks. A refilled row's columns that its new request does not overwrite
    keep the old request's (finite) values, masked. Each token's position is the count of real tokens before it
    in its row, so a request's numbers are its own whatever its neighbours, up to float rounding (forward_rows).
    When the columns run out, each row's live ones move to the front, and the buffers grow if that is not
    enough.
    """

    def __init__(self, lm: HFBackend, requests: Sequence[GenerationRequest], max_new_tokens: int,
                 until: tuple[str, ...]) -> None:
        self.lm, self.prefixes = lm, _Prefixes(lm, requests)
        self.waiting = list(reversed(requests))  # popped from the end: in the given order
        self.max_new_tokens, self.until = max_new_tokens, until
        self.buffers: KeyValues = []
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # 1: a real token of the row's request
        self.length = 0  # columns in use; every column from here on is masked in every row
        self.busy: list[_Row | None] = []
        self.next_tokens: list[int] = []  # each row's input to the next step

    def run(self, rows: int) -> Iterator[Finished]:
        """Each request as it finishes."""
        self.busy = [None] * min(rows, len(self.waiting))
        self.next_tokens = [self.lm.pad_token_id] * len(self.busy)
        while True:
            free = [slot for slot, row in enumerate(self.busy) if row is None]
            if self.waiting and free and 2 * len(free) >= len(self.busy):
                arrivals = [(slot, self.waiting.pop()) for slot in free[: len(self.waiting)]]
                for group in dict.fromkeys(request.group for _, request in arrivals):
                    yield from self._admit([(slot, request) for slot, request in arrivals if request.group == group])
                continue  # requests may finish on their first token: refill before stepping
            if free and not self.waiting:  # the idle rows go
                self._keep([slot for slot, row in enumerate(self.busy) if row is not None])
            if not self.busy:
                return
            yield from self._step()

    def _admit(self, arrivals: list[tuple[int, GenerationRequest]]) -> Iterator[Finished]:
        """Run the arrivals' queries (one prefix group) together, right-padded after their prefix; their keys and
        values go into their rows."""
        prefix, length = self.prefixes.take(arrivals[0][1].group, len(arrivals))
        queries = [request.context_ids[length:] for _, request in arrivals]
        past = None if prefix is None else prefix.cache(len(queries), max(map(len, queries)))
        mask, logits, layers = forward_rows(self.lm, past, queries, [len(q) - 1 for q in queries], span=1)
        columns = mask.shape[1]
        self._reserve(0, least=columns, like=layers)
        slots = torch.tensor([slot for slot, _ in arrivals])
        for (keys, values), (new_keys, new_values) in zip(self.buffers, layers):
            keys[slots, :, :columns] = new_keys
            values[slots, :, :columns] = new_values
        self.mask[slots] = 0
        self.mask[slots, :columns] = mask
        self.length = max(self.length, columns)
        for (slot, request), query, token in zip(arrivals, queries, logits[:, 0].argmax(dim=-1).tolist()):
            self.busy[slot] = _Row(request.index, [], len(query))
            yield from self._take(slot, token)

    def _step(self) -> Iterator[Finished]:
        """One token for every busy row; a waiting row runs its last token again, read by no one."""
        self._reserve(1)
        cache = buffer_cache(self.buffers, self.length)
        inputs = [(token,) for token in self.next_tokens]
        _, logits, _ = forward_rows(self.lm, cache, inputs, [0] * len(inputs), span=1,
                                    cache_mask=self.mask[:, : self.length])
        busy = [slot for slot, row in enumerate(self.busy) if row is not None]
        self.mask[busy, self.length] = 1
        self.length += 1
        tokens = logits[:, 0].argmax(dim=-1).tolist()
        for slot in busy:
            row = self.busy[slot]
            assert row is not None
            row.forwarded += 1
            yield from self._take(slot, tokens[slot])

    def _take(self, slot: int, token: int) -> Iterator[Finished]:
        """A row's next token: the request finishes on the end-of-sequence token, a stop string or the limit."""
        row = self.busy[slot]
        assert row is not None
        end = token == self.lm.tokenizer.eos_token_id
        if not end:
            row.tokens.append(token)
        self.next_tokens[slot] = token
        finished = end or len(row.tokens) >= self.max_new_tokens
        text = self.lm.tokenizer.decode(row.tokens, skip_special_tokens=True) if finished or self.until else ""
        if finished or any(stop in text for stop in self.until):  # decoded at each step only to look for stops
            self.busy[slot] = None
            yield Finished(row.index, text, len(row.tokens), row.forwarded)

    def _keep(self, slots: list[int]) -> None:
        """Only these rows stay (the others are idle and nothing waits)."""
        index = torch.tensor(slots, dtype=torch.long)
        self.buffers = [(keys[index], values[index]) for keys, values in self.buffers]
        self.mask = self.mask[index]
        self.busy = [self.busy[slot] for slot in slots]
        self.next_tokens = [self.next_tokens[slot] for slot in slots]

    def _reserve(self, extra: int, least: int = 0, like: KeyValues | None = None) -> None:
        """Room for `extra` columns after the used ones and for `least` columns in all: each row's live columns
        moved to the front, and bigger buffers if that frees too little (the first ones shaped like `like`, one
        forward pass's keys and values)."""
        capacity = self.mask.shape[1]
        if max(self.length + extra, least) <= capacity:
            return
        if self.length:
            self._compact()
            if max(self.length + extra, least) <= capacity and self.length <= capacity // 2:  # else again soon
                return
        grown = max(2 * capacity, self.length + extra + 64, least + 64)
        rows, kept = len(self.busy), bool(self.buffers)
        self.buffers = [(_widened(keys, rows, grown, kept), _widened(values, rows, grown, kept))
                        for keys, values in (self.buffers or like or [])]
        self.mask = torch.cat([self.mask, self.mask.new_zeros((rows, grown - capacity))], dim=1) if kept \
            else torch.zeros((rows, grown), dtype=torch.long)

    def _compact(self) -> None:
        """Each row's live columns to the front, in order; the rest masked."""
        live = self.mask[:, : self.length].bool()
        counts = live.sum(dim=1)
        width = int(counts.max())
        order = torch.sort((~live).to(torch.int8), dim=1, stable=True).indices[:, :width]  # live columns first
        for keys, values in self.buffers:
            for buffer in (keys, values):
                index = order.to(buffer.device)[:, None, :, None].expand(-1, buffer.shape[1], -1, buffer.shape[3])
                buffer[:, :, :width] = buffer[:, :, : self.length].gather(2, index)
        self.mask[:, :width] = (torch.arange(width)[None, :] < counts[:, None]).long()
        self.mask[:, width:] = 0
        self.length = width


def _widened(tensor: torch.Tensor, rows: int, columns: int, kept: bool) -> torch.Tensor:
    """A zeroed (rows, heads, columns, dim) buffer shaped like `tensor`, whose columns come first if `kept` (zeros:
    a masked column's value still enters the weighted sum, multiplied by 0, and must not be NaN)."""
    buffer = tensor.new_zeros((rows, tensor.shape[1], columns, tensor.shape[3]))
    if kept:
        buffer[:, :, : tensor.shape[2]] = tensor
    return buffer
