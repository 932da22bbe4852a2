"""Greedy generation: short answers (kind: generate) and the generation scorer (outputs parsed to labels).

Decoding is continuous batching over the shared forward pass (harness/engine/hf/forward.py): each row of the batch holds
one request, and a request that stops hands its row to the next at once. For instruction-tuned models that
answer rather than rank, an output that names no label is recorded with prediction null and counts as wrong.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from harness.engine.hf.backend import LanguageModel
from harness.engine.hf.forward import (
    KeyValues,
    SharedPrefix,
    buffer_cache,
    encode_prefix,
    forward_rows,
    shared_prefix_length,
)
from harness.engine.journal import Journal
from harness.engine.request import ScoringRequest
from harness.engine.scoring import AUTO_BATCH_START, ScoringStats


@dataclass(frozen=True)
class Generation:
    text: str
    label: int | None  # index of the label the text names, None when it names none


def parse_label(text: str, verbalizers: Sequence[str]) -> int | None:
    """The label whose verbalizer the first line of `text` starts with, as a whole word, ignoring case.

    Longer verbalizers are tried first, so "very good" wins over "very" when both are labels.
    """
    answer = text.strip().split("\n", 1)[0].strip().lower()
    for index in sorted(range(len(verbalizers)), key=lambda i: -len(verbalizers[i].strip())):
        word = verbalizers[index].strip().lower()
        if re.match(re.escape(word) + r"(?!\w)", answer):
            return index
    return None


def generate_labels(
    lm: LanguageModel,
    requests: Sequence[ScoringRequest],
    verbalizers: Sequence[str],
    max_new_tokens: int,
    batch_size: int | None,
    progress: bool = True,
    journal: Journal | None = None,
) -> tuple[list[Generation], ScoringStats]:
    """Greedy continuations parsed to labels."""
    texts, stats = generate_texts(lm, requests, max_new_tokens, (), batch_size, progress, journal)
    return [Generation(text=text, label=parse_label(text, verbalizers)) for text in texts], stats


@torch.inference_mode()
def generate_texts(
    lm: LanguageModel,
    requests: Sequence[ScoringRequest],
    max_new_tokens: int,
    until: Sequence[str],
    batch_size: int | None,
    progress: bool = True,
    journal: Journal | None = None,
) -> tuple[list[str], ScoringStats]:
    """Greedy continuations of each request's context, up to max_new_tokens, the end-of-sequence token or a
    stop string of `until`; the text is cut before the first stop string, as lm-evaluation-harness's
    generate_until does. With a journal, texts finished by an earlier process are reused.

    Decoding keeps `batch_size` rows busy (continuous batching): a row whose request stops takes the next one at
    once instead of idling until the longest row of its batch is done. Short answers are mostly a few tokens
    with a rare long one, so a fixed batch would run nearly every step of its longest row for all its rows.
    Requests sharing a prefix (the same instruction and demonstrations) run it once.
    """
    start = time.perf_counter()
    done = journal.results if journal is not None else {}
    outputs: dict[int, tuple[str, int]] = {index: (text, count) for index, (text, count) in done.items()}
    forwarded = sum(journal.tokens.values()) if journal is not None else 0
    prefixes = _Prefixes(lm, requests)
    rows = batch_size or AUTO_BATCH_START[lm.device.type]
    with tqdm(total=len(requests), initial=len(done), unit="ex", desc="generating", disable=not progress,
              dynamic_ncols=True) as bar:
        while len(outputs) < len(requests):
            waiting = prefixes.waiting([i for i in range(len(requests)) if i not in outputs])
            decoder = _Decoder(lm, prefixes, waiting, max_new_tokens, tuple(until))
            try:
                for index, text, count, tokens in decoder.run(rows):
                    if journal is not None:
                        journal.record([index], [[text, count]], tokens)
                    outputs[index] = (text, count)
                    forwarded += tokens
                    bar.update(1)
            except torch.OutOfMemoryError:
                if batch_size is not None or rows == 1:
                    raise
                rows //= 2  # as map_batches: a request's tokens do not depend on its neighbours (but float rounding)
                if lm.device.type == "cuda":
                    torch.cuda.empty_cache()
            forwarded += prefixes.tokens
    texts = [cut_at_stop(outputs[index][0], until) for index in range(len(requests))]
    context_tokens = sum(len(r.context_ids) for r in requests)
    generated_tokens = sum(count for _, count in outputs.values())
    return texts, ScoringStats(context_tokens + generated_tokens, forwarded, time.perf_counter() - start)


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string."""
    for stop in until:
        text = text.split(stop, 1)[0]
    return text


@dataclass(frozen=True)
class _Waiting:
    index: int  # the request's
    context: tuple[int, ...]
    group: tuple[object, ...] | None  # its prefix group; None: alone in its group, so no prefix


class _Prefixes:
    """The prefix each group of requests shares (the longest common token prefix of the group's contexts, as the
    scorer's level 1, plus the soft prompt after prompt tuning), run when the group's first request is admitted
    and let go after its last. Requests alone in their group are decoded as one group without a prefix, so that
    their queries run together (demonstrations retrieved per item make every group one request)."""

    def __init__(self, lm: LanguageModel, requests: Sequence[ScoringRequest]) -> None:
        self.lm, self.requests = lm, requests
        members: dict[tuple[object, ...], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            members[request.prefix_group].append(index)
        self.group = {index: group if len(indices) > 1 else None
                      for group, indices in members.items() for index in indices}
        self.length = {group: shared_prefix_length([requests[i].context_ids for i in indices])
                       for group, indices in members.items() if len(indices) > 1}
        self.length[None] = 0
        self.first = {group: indices[0] for group, indices in members.items() if len(indices) > 1}
        self.remaining: Counter[tuple[object, ...] | None] = Counter()
        self.encoded: dict[tuple[object, ...] | None, SharedPrefix | None] = {}
        self.tokens = 0  # prefix tokens run

    def waiting(self, indices: list[int]) -> list[_Waiting]:
        """These requests in decoding order: group by group (in order of first appearance), longest context first."""
        first_seen: dict[tuple[object, ...] | None, int] = {}
        for index in indices:
            first_seen.setdefault(self.group[index], len(first_seen))
        order = sorted(indices, key=lambda i: (first_seen[self.group[i]], -len(self.requests[i].context_ids)))
        self.remaining = Counter(self.group[i] for i in indices)
        self.encoded, self.tokens = {}, 0
        return [_Waiting(i, self.requests[i].context_ids, self.group[i]) for i in order]

    def take(self, group: tuple[object, ...] | None, requests: int) -> tuple[SharedPrefix | None, int]:
        """The group's prefix and its length in context tokens, for `requests` of its requests."""
        length = self.length[group]
        if group not in self.encoded:
            ids = () if group is None else self.requests[self.first[group]].context_ids[:length]
            self.encoded[group] = encode_prefix(self.lm, ids)
            self.tokens += length
        prefix = self.encoded[group]
        self.remaining[group] -= requests
        if not self.remaining[group]:
            del self.encoded[group]
        return prefix, length


@dataclass
class _Row:
    index: int  # the request's
    tokens: list[int]  # generated so far
    forwarded: int  # tokens this request ran: its query, then one per decoding step


class _Decoder:
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

    def __init__(self, lm: LanguageModel, prefixes: _Prefixes, waiting: list[_Waiting], max_new_tokens: int,
                 until: tuple[str, ...]) -> None:
        self.lm, self.prefixes = lm, prefixes
        self.waiting = list(reversed(waiting))  # popped from the end: in the given order
        self.max_new_tokens, self.until = max_new_tokens, until
        self.buffers: KeyValues = []
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # 1: a real token of the row's request
        self.length = 0  # columns in use; every column from here on is masked in every row
        self.busy: list[_Row | None] = []
        self.next_tokens: list[int] = []  # each row's input to the next step

    def run(self, rows: int) -> Iterator[tuple[int, str, int, int]]:
        """(index, text, new tokens, tokens forwarded) of each request, as it finishes."""
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

    def _admit(self, arrivals: list[tuple[int, _Waiting]]) -> Iterator[tuple[int, str, int, int]]:
        """Run the arrivals' queries (one prefix group) together, right-padded after their prefix; their keys and
        values go into their rows."""
        prefix, length = self.prefixes.take(arrivals[0][1].group, len(arrivals))
        queries = [request.context[length:] for _, request in arrivals]
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

    def _step(self) -> Iterator[tuple[int, str, int, int]]:
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

    def _take(self, slot: int, token: int) -> Iterator[tuple[int, str, int, int]]:
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
            yield row.index, text, len(row.tokens), row.forwarded

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
