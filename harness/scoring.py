"""Scoring requests -> scores: the log-probability of every label's continuation.

Rank classification. For each request the context is shared by all labels, and within a
demonstration set most of the context (instruction + demonstrations) is shared by all test
examples. That shared token prefix is encoded once; every row then runs only its own tokens on
top of the cached keys and values. A row is one test example's context plus the tokens that
some labels share before their last token, so labels with single-token verbalizers are all
scored from one pass. With prefix_cache=False the
prefix is empty and each row is recomputed in full: the reference the cached path must match.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from tqdm import tqdm
from transformers import DynamicCache

from harness.models import LanguageModel
from harness.requests import ScoringRequest

# Rows of a batch share the cached prefix, so big batches pay off on accelerators; on CPU
# throughput stops growing well before 64 rows.
AUTO_BATCH_START = {"cuda": 512, "mps": 256, "cpu": 64}
Item = TypeVar("Item")
Result = TypeVar("Result")
PrefixCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape (1, heads, p, dim)


@dataclass(frozen=True)
class LabelScores:
    logprobs: tuple[float, ...]  # summed over each label's continuation tokens
    token_counts: tuple[int, ...]


@dataclass(frozen=True)
class ScoringStats:
    tokens_scored: int  # context + continuation tokens of every (example, label) row
    tokens_forwarded: int  # tokens the model actually ran: shared prefixes count once
    seconds: float


@dataclass(frozen=True)
class _Row:
    """One sequence to run: a request's context plus `stem`, scoring every label whose continuation is stem + 1 token.

    Labels with single-token verbalizers share the empty stem, so one pass scores them all.
    """

    request: int
    stem: tuple[int, ...]
    labels: tuple[int, ...]


def _rows(index: int, request: ScoringRequest) -> list[_Row]:
    by_stem: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for label, ids in enumerate(request.continuation_ids):
        by_stem[ids[:-1]].append(label)
    return [_Row(index, stem, tuple(labels)) for stem, labels in by_stem.items()]


@torch.inference_mode()
def score_requests(
    lm: LanguageModel,
    requests: Sequence[ScoringRequest],
    batch_size: int | None,
    prefix_cache: bool = True,
    progress: bool = True,
) -> tuple[list[LabelScores], ScoringStats]:
    """Score every label of every request; batch_size=None starts large and halves on out-of-memory."""
    start = time.perf_counter()
    logprobs = [[0.0] * len(request.continuation_ids) for request in requests]
    forwarded = 0
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        groups[request.demo_ids].append(index)
    with tqdm(total=len(requests), unit="ex", desc="scoring", disable=not progress, dynamic_ncols=True) as bar:
        for members in groups.values():
            contexts = [requests[i].context_ids for i in members]
            prefix_length = _shared_prefix_length(contexts) if prefix_cache else 0
            prefix = _encode_prefix(lm, contexts[0][:prefix_length])
            forwarded += prefix_length
            rows = [row for i in members for row in _rows(i, requests[i])]
            rows.sort(key=lambda row: -len(requests[row.request].context_ids) - len(row.stem))
            remaining = Counter(row.request for row in rows)
            score = partial(_score_batch, lm, prefix, prefix_length, requests)
            for batch, (values, tokens_run) in map_batches(rows, batch_size, lm.device, score):
                for row, row_values in zip(batch, values):
                    for label, value in zip(row.labels, row_values):
                        logprobs[row.request][label] = value
                    remaining[row.request] -= 1
                    bar.update(remaining[row.request] == 0)
                forwarded += tokens_run
    scores = [
        LabelScores(tuple(values), tuple(len(ids) for ids in request.continuation_ids))
        for values, request in zip(logprobs, requests)
    ]
    scored = sum(len(r.context_ids) * len(r.continuation_ids) + sum(map(len, r.continuation_ids)) for r in requests)
    return scores, ScoringStats(scored, forwarded, time.perf_counter() - start)


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


def _shared_prefix_length(contexts: Sequence[tuple[int, ...]]) -> int:
    """Longest common token prefix, leaving each context at least its last token.

    The last context token must run with the row: its output predicts the first label token.
    """
    first = contexts[0]
    limit = min(len(context) for context in contexts) - 1
    length = 0
    while length < limit and all(context[length] == first[length] for context in contexts):
        length += 1
    return length


def _encode_prefix(lm: LanguageModel, ids: tuple[int, ...]) -> PrefixCache | None:
    """Keys and values of the soft prompt (prompt tuning), if any, followed by `ids`."""
    input_ids = torch.tensor([ids], dtype=torch.long, device=lm.device)
    if lm.soft_prompt is None:
        if not ids:
            return None
        output = lm.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    else:
        embeddings = torch.cat([lm.soft_prompt[None], lm.model.get_input_embeddings()(input_ids)], dim=1)
        output = lm.model(inputs_embeds=embeddings, use_cache=True, logits_to_keep=1)
    return [(keys, values) for keys, values, *_ in output.cache]


def _score_batch(
    lm: LanguageModel,
    prefix: PrefixCache | None,
    prefix_length: int,
    requests: Sequence[ScoringRequest],
    rows: Sequence[_Row],
) -> tuple[list[list[float]], int]:
    """Per row, the summed continuation log-prob of each of its labels; and the number of real tokens run.

    The rows continue after `prefix`, which holds the soft prompt (if any) and the first `prefix_length`
    context tokens of every row.
    """
    inputs = [requests[row.request].context_ids[prefix_length:] + row.stem for row in rows]
    cached = 0 if prefix is None else prefix[0][0].shape[2]
    batch, width = len(rows), max(map(len, inputs))
    span = max(len(row.stem) for row in rows) + 1  # positions per row whose next-token distribution is needed
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0  # GPT-2 has none
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, cached + width), dtype=torch.long)
    attention_mask[:, :cached] = 1
    keep = torch.zeros((batch, span), dtype=torch.long)
    for index, (row, ids) in enumerate(zip(rows, inputs)):
        input_ids[index, : len(ids)] = torch.tensor(ids)
        attention_mask[index, cached : cached + len(ids)] = 1  # right padding stays masked
        first = len(ids) - len(row.stem) - 1  # the last context token predicts the first label token
        keep[index] = first + torch.arange(span).clamp(max=len(row.stem))
    position_ids = (cached + torch.arange(width)).expand(batch, width)
    cache = None
    if prefix is not None:
        expanded = [(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1)) for keys, values in prefix]
        cache = DynamicCache(ddp_cache_data=expanded, config=lm.model.config)
    device = lm.device
    logits = lm.model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=position_ids.to(device),
        cache=cache,
        use_cache=cache is not None,
        logits_to_keep=keep.to(device),
    ).logits
    token_logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    values = []
    for index, row in enumerate(rows):
        stem_total = sum(token_logprobs[index, j, token].item() for j, token in enumerate(row.stem))
        last = len(row.stem)
        values.append([
            stem_total + token_logprobs[index, last, requests[row.request].continuation_ids[label][-1]].item()
            for label in row.labels
        ])
    return values, sum(map(len, inputs))
