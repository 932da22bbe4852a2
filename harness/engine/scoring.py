"""Scoring requests -> scores: the log-probability of every label's continuation.

Rank classification, computed in three nested levels so that nothing shared is run twice:

1. the prefix shared by a group of requests (those with the same instruction and demonstrations: the
   longest common token prefix of their contexts, plus a soft prompt after prompt tuning) runs once
   per group; at 0 shots MMLU's items form a group per subject, whose instruction names it;
2. each request's own context tokens (the query) run once, on top of the prefix; the query's last
   position gives the next-token distribution that scores every single-token verbalizer at once;
3. multi-token verbalizers run only their own tokens, on top of the query's keys and values, one
   row per distinct stem (the tokens before a verbalizer's last token), all labels sharing that
   stem together. A request with a single continuation (a cloze target) runs it in the query's own
   row instead: nothing is shared, so one pass does it.

With prefix_cache=False level 1 is empty. Every level uses the very token ids of the plain
whole-context encoding, so the scores equal a full recompute up to float rounding (tested).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from tqdm import tqdm
from transformers import DynamicCache

from harness.engine.hf.backend import LanguageModel
from harness.engine.hf.forward import SharedPrefix, encode_prefix, forward_rows, shared_prefix_length
from harness.engine.journal import Journal
from harness.engine.request import ScoringRequest
from harness.errors import HarnessError

# Rows of a batch share the cached prefix, so big batches pay off on accelerators. On a 2-core CPU, 8-shot
# SST-2 scoring took 7.0 / 6.8 / 7.2 / 8.3 s at 8 / 16 / 32 / 64 rows: past 16 rows the activations
# outgrow the caches.
AUTO_BATCH_START = {"cuda": 512, "mps": 256, "cpu": 16}
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


@torch.inference_mode()
def score_requests(
    lm: LanguageModel,
    requests: Sequence[ScoringRequest],
    batch_size: int | None,
    prefix_cache: bool = True,
    progress: bool = True,
    journal: Journal | None = None,
) -> tuple[list[LabelScores], ScoringStats]:
    """Score every label of every request; batch_size=None starts large and halves on out-of-memory.

    With a journal, each finished batch is recorded there and requests it holds already are not scored
    again. Batches are formed from the same sorted order either way and a journal holds whole batches,
    so the remaining requests meet in the batches an uninterrupted run forms (the same numbers, not
    just the same up to float rounding).
    """
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
            prefix_length = shared_prefix_length(contexts) if prefix_cache else 0
            forwarded += prefix_length
            members.sort(key=lambda i: -_row_width(requests[i]))  # similar lengths, little padding
            todo = [index for index in members if index not in done]
            if not todo:
                continue
            prefix = encode_prefix(lm, contexts[0][:prefix_length])
            score = partial(_score_batch, lm, prefix, prefix_length, requests)
            for batch, (values, tokens_run) in map_batches(todo, batch_size, lm.device, score):
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


def _row_width(request: ScoringRequest) -> int:
    """Positions the request's row runs: its context, and a single continuation in the same row (_score_batch)
    but its last token; several continuations run after the row."""
    inline = request.continuation_ids[0] if len(request.continuation_ids) == 1 else ()
    return len(request.context_ids) + max(0, len(inline) - 1)


def _require_finite(values: list[list[tuple[float, bool]]], requests: Sequence[ScoringRequest]) -> None:
    """A NaN or infinite log-prob means broken weights or numerics: stop before it becomes a result."""
    for request_values, request in zip(values, requests):
        if not all(math.isfinite(value) for value, _ in request_values):
            raise HarnessError(
                f"the model gave a non-finite log-probability ({request_values}) for a request with "
                f"{len(request.context_ids)} context tokens: its weights may be damaged (python -m harness "
                "cache verify checks packaged models); nothing of this run was recorded as a result")


def map_batches(
    items: Sequence[Item], batch_size: int | None, device: torch.device, run: Callable[[Sequence[Item]], Result]
) -> Iterator[tuple[Sequence[Item], Result]]:
    """Apply `run` to consecutive batches. batch_size=None (auto) starts at AUTO_BATCH_START and halves the
    batch on out-of-memory until it fits: rows never influence each other, so the numbers do not change."""
    size = batch_size or AUTO_BATCH_START[device.type]
    done = 0
    while done < len(items):
        batch = items[done : done + size]
        try:
            result = run(batch)
        except torch.OutOfMemoryError:
            if batch_size is not None or size == 1:
                raise
            size //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        done += len(batch)
        yield batch, result


def _score_batch(
    lm: LanguageModel,
    prefix: SharedPrefix | None,
    prefix_length: int,
    requests: Sequence[ScoringRequest],
    batch: Sequence[int],
) -> tuple[list[list[tuple[float, bool]]], int]:
    """Every label's (log-prob, greedy) for each request of the batch, and the number of real tokens run.

    `prefix` holds the soft prompt (if any) and the first `prefix_length` context tokens of every request.
    """
    queries = [requests[i].context_ids[prefix_length:] for i in batch]
    # A request with one continuation (a cloze target, a partial-scoring option) runs it in the same row, right
    # after its query: one forward pass, as a full recompute does, instead of a second pass over a copy of the
    # query's keys and values. With several, the query runs once and the continuations after it (level 3).
    inline = [requests[i].continuation_ids[0] if len(requests[i].continuation_ids) == 1 else () for i in batch]
    inputs = [query + ids[:-1] for query, ids in zip(queries, inline)]
    past = None if prefix is None else prefix.cache(len(inputs), max(map(len, inputs)))
    span = max(1, *map(len, inline))
    query_mask, logits, query_cache = forward_rows(lm, past, inputs, [len(q) - 1 for q in queries], span=span)
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()  # from each request's last context token on
    best = logprobs.argmax(dim=-1).tolist()
    next_token, next_best = logprobs[:, 0], [row[0] for row in best]
    values: list[list[tuple[float, bool]]] = [[(0.0, False)] * len(requests[i].continuation_ids) for i in batch]
    for row, ids in enumerate(inline):
        if ids:
            values[row][0] = (sum(logprobs[row, j, token].item() for j, token in enumerate(ids)),
                              all(best[row][j] == token for j, token in enumerate(ids)))
    stems: list[tuple[int, tuple[int, ...], list[int]]] = []  # (row in batch, stem, labels sharing it)
    for row, index in enumerate(batch):
        if inline[row]:
            continue
        by_stem: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for label, ids in enumerate(requests[index].continuation_ids):
            if len(ids) == 1:
                values[row][label] = (next_token[row, ids[0]].item(), next_best[row] == ids[0])
            else:
                by_stem[ids[:-1]].append(label)
        stems.extend((row, stem, labels) for stem, labels in by_stem.items())
    tokens_run = sum(map(len, inputs))
    for start in range(0, len(stems), len(batch)):  # at most as many stem rows at once as query rows
        chunk = stems[start : start + len(batch)]
        rows = torch.tensor([row for row, _, _ in chunk])
        cache = DynamicCache(ddp_cache_data=[(keys[rows], values_[rows]) for keys, values_ in query_cache])
        stem_inputs = [stem for _, stem, _ in chunk]
        _, stem_logits, _ = forward_rows(lm, cache, stem_inputs, [0] * len(chunk), span=max(map(len, stem_inputs)),
                                     cache_mask=query_mask[rows])
        stem_logprobs = torch.log_softmax(stem_logits.float(), dim=-1).cpu()
        stem_best = stem_logprobs.argmax(dim=-1).tolist()
        for position, (row, stem, labels) in enumerate(chunk):
            # the query's last position predicts stem[0]; stem position j predicts stem[j + 1], then the last token
            total = next_token[row, stem[0]].item()
            total += sum(stem_logprobs[position, j, token].item() for j, token in enumerate(stem[1:]))
            stem_greedy = next_best[row] == stem[0] and all(
                stem_best[position][j] == token for j, token in enumerate(stem[1:]))
            for label in labels:
                last_token = requests[batch[row]].continuation_ids[label][-1]
                values[row][label] = (total + stem_logprobs[position, len(stem) - 1, last_token].item(),
                                      stem_greedy and stem_best[position][len(stem) - 1] == last_token)
        tokens_run += sum(map(len, stem_inputs))
    return values, tokens_run


