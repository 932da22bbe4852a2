"""Scoring requests -> scores, over any backend: grouping, batching, the journal and out-of-memory halving, once.

Requests with the same prefix group (the same instruction and demonstrations) are scored together, and the
backend is told how many context tokens they all share (a backend may run those once: the HF backend does,
harness/engine/hf/scorer.py). Within a group, requests are sorted by the widest row they make (similar widths,
little padding) and cut into batches: of batch_size requests, or with batch_size=auto by a token budget (the
positions a batch's rows hold in the keys and values, padding and shared prefix included: a batch of short rows
holds many, one of long rows few), which starts at the backend's auto_batch_tokens (or batch_tokens) and halves
on OutOfMemory. Neither changes a number but by float rounding (rows never influence each other).

With a journal, each finished batch is recorded there and requests it holds already are not scored again.
Batches are formed from the same sorted order either way and a journal holds whole batches, so the remaining
requests meet in the batches an uninterrupted run forms (the same numbers, not just the same up to float
rounding).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

from harness.engine.backend import Backend, OutOfMemory, Scores
from harness.engine.journal import Journal
from harness.engine.request import ScoringRequest, shared_prefix_length, whole_rows
from harness.errors import HarnessError

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class LabelScores:
    logprobs: tuple[float, ...]  # summed over each label's continuation tokens
    token_counts: tuple[int, ...]
    # whether each continuation is the model's greedy one: every token the most likely next token (LAMBADA's acc)
    greedy: tuple[bool, ...]


@dataclass(frozen=True)
class ScoringStats:
    tokens_scored: int  # context + continuation tokens of every (example, label) pair
    tokens_forwarded: int  # tokens the model actually ran: shared prefixes and queries count once
    seconds: float


def score_requests(
    backend: Backend,
    requests: Sequence[ScoringRequest],
    batch_size: int | None,
    prefix_cache: bool = True,
    progress: bool = True,
    journal: Journal | None = None,
    rolling: bool = False,
    batch_tokens: int | None = None,
) -> tuple[list[LabelScores], ScoringStats]:
    """Score every continuation of every request in batches of batch_size requests; batch_size=None: batches of at
    most batch_tokens positions (None: the backend's auto_batch_tokens), halved on out-of-memory. rolling=True: the
    requests are windows of documents (harness/engine/rolling.py), scored by the backend's loglikelihood_rolling
    (one continuation each, no prefix shared)."""
    start = time.perf_counter()
    done = journal.results if journal is not None else {}
    results: list[list[tuple[float, bool]]] = [[tuple(pair) for pair in done.get(index, [])]
                                               for index in range(len(requests))]
    forwarded = sum(journal.tokens.values()) if journal is not None else 0
    groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        groups[request.prefix_group].append(index)
    with tqdm(total=len(requests), initial=len(done), unit="ex", desc="scoring", disable=not progress,
              dynamic_ncols=True) as bar:
        for members in groups.values():
            contexts = [requests[i].context_ids for i in members]
            shared = shared_prefix_length(contexts) if prefix_cache and not rolling else 0
            forwarded += shared
            members.sort(key=lambda i: -_row_width(requests[i], shared))  # similar widths, little padding
            todo = [index for index in members if index not in done]
            if not todo:
                continue

            group = object()  # this pass over the group: the backend may keep its prefix between the group's batches

            def score(batch: Sequence[int], shared: int = shared, group: object = group) -> tuple[Scores, int]:
                chosen = [requests[i] for i in batch]
                if rolling:
                    values, tokens = backend.loglikelihood_rolling(chosen)
                    return [[(value, False)] for value in values], tokens
                return backend.loglikelihood(chosen, shared, group)

            if batch_size is None:  # a token budget, halved on out-of-memory
                batches = map_batches(todo, batch_tokens or backend.auto_batch_tokens, score, _positions(requests, shared))
            else:  # the user's count of requests: out of memory stops the run
                batches = map_batches(todo, batch_size, score, _one, halve=False)
            for batch, (values, tokens_run) in batches:
                _require_finite(values, [requests[i] for i in batch])
                if journal is not None:
                    journal.record(batch, values, tokens_run)
                for index, request_values in zip(batch, values):
                    results[index] = request_values
                forwarded += tokens_run
                bar.update(len(batch))
    scores = [
        LabelScores(tuple(value for value, _ in pairs), tuple(len(ids) for ids in request.continuation_ids),
                    tuple(bool(greedy) for _, greedy in pairs))
        for pairs, request in zip(results, requests)
    ]
    scored = sum(len(r.context_ids) * len(r.continuation_ids) + sum(map(len, r.continuation_ids)) for r in requests)
    return scores, ScoringStats(scored, forwarded, time.perf_counter() - start)


def _row_width(request: ScoringRequest, shared: int) -> int:
    """The widest row the request makes after the shared prefix, so that a batch's rows have similar widths and
    little padding: its query and longest continuation (but its last token) when its continuations run in rows
    of their own (request.whole_rows), else its query (its continuations run in a second pass)."""
    query = len(request.context_ids) - shared
    if whole_rows(query, request.continuation_ids):
        return query + max(0, max(map(len, request.continuation_ids), default=0) - 1)
    return query


def _positions(requests: Sequence[ScoringRequest], shared: int) -> Callable[[int, int], int]:
    """The token budget's cost of a request in a batch led by another (the widest: every row is padded to its
    width): the positions its rows hold in the keys and values, the shared prefix included (each row attends to its
    own copy), as memory grows with them. A query row holds the prefix and the batch's width; whole rows one such
    row per continuation; a second pass one row per distinct stem, holding its query's row and the stem."""

    def cost(index: int, first: int) -> int:
        request, width = requests[index], shared + _row_width(requests[first], shared)
        query = len(request.context_ids) - shared
        if whole_rows(query, request.continuation_ids):
            return len(request.continuation_ids) * width
        stems = {ids[:-1] for ids in request.continuation_ids if len(ids) > 1}
        return width + sum(width + len(stem) for stem in stems)

    return cost


def _one(index: int, first: int) -> int:
    return 1


def _require_finite(values: Scores, requests: Sequence[ScoringRequest]) -> None:
    """A NaN or infinite log-prob means broken weights or numerics: stop before it becomes a result."""
    for request_values, request in zip(values, requests):
        if not all(math.isfinite(value) for value, _ in request_values):
            raise HarnessError(
                f"the model gave a non-finite log-probability ({request_values}) for a request with "
                f"{len(request.context_ids)} context tokens: its weights may be damaged (python -m harness "
                "cache verify checks packaged models); nothing of this run was recorded as a result")


def map_batches(items: Sequence[Item], size: int, run: Callable[[Sequence[Item]], Result],
                cost: Callable[[Item, Item], int], halve: bool = True) -> Iterator[tuple[Sequence[Item], Result]]:
    """Apply `run` to consecutive batches, each as long as the costs of its items (cost(item, the batch's first
    item)) stay within `size`, and at least one item. On OutOfMemory, with `halve` the size halves and the batch
    forms again (rows never influence each other, so the numbers do not change but by float rounding); without, the
    run stops."""
    done = 0
    while done < len(items):
        end, used = done + 1, cost(items[done], items[done])
        while end < len(items) and used + (share := cost(items[end], items[done])) <= size:
            end, used = end + 1, used + share
        batch = items[done:end]
        try:
            result = run(batch)
        except OutOfMemory:
            if not halve or len(batch) == 1:
                raise HarnessError(out_of_memory(len(batch), size, "tokens" if halve else "rows")) from None
            size = max(1, size // 2)
            continue
        done = end
        yield batch, result


def out_of_memory(requests: int, size: int, unit: str) -> str:
    fix = ("set a smaller batch_size, or batch_size=auto to halve it until it fits" if unit == "rows" else
           "a single request does not fit: set a smaller model.max_length, or use a device with more memory")
    return f"out of memory with {requests} requests at once ({size} {unit}); {fix} (finished batches are kept: " \
           "rerun the same command)"
