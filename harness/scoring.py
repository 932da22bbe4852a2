"""Scoring requests -> scores: the log-probability of every label's continuation.

Rank classification. For each request the context is shared by all labels, and within a
demonstration set most of the context (instruction + demonstrations) is shared by all test
examples. That shared token prefix is encoded once; every (example, label) row then runs
only its own tokens on top of the cached keys and values. With prefix_cache=False the
prefix is empty and each row is recomputed in full: the reference the cached path must match.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm import tqdm
from transformers import DynamicCache

from harness.models import LanguageModel
from harness.requests import ScoringRequest

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


@torch.inference_mode()
def score_requests(
    lm: LanguageModel,
    requests: Sequence[ScoringRequest],
    batch_size: int,
    prefix_cache: bool = True,
    progress: bool = True,
) -> tuple[list[LabelScores], ScoringStats]:
    start = time.perf_counter()
    logprobs = [[0.0] * len(request.continuation_ids) for request in requests]
    forwarded = 0
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        groups[request.demo_ids].append(index)
    rows_total = sum(len(request.continuation_ids) for request in requests)
    with tqdm(total=rows_total, unit="seq", desc="scoring", disable=not progress, dynamic_ncols=True) as bar:
        for members in groups.values():
            contexts = [requests[i].context_ids for i in members]
            prefix_length = _shared_prefix_length(contexts) if prefix_cache else 0
            prefix = _encode_prefix(lm, contexts[0][:prefix_length]) if prefix_length else None
            forwarded += prefix_length
            rows = [(i, label) for i in members for label in range(len(requests[i].continuation_ids))]
            rows.sort(key=lambda row: -len(requests[row[0]].context_ids) - len(requests[row[0]].continuation_ids[row[1]]))
            for batch_start in range(0, len(rows), batch_size):
                batch = rows[batch_start : batch_start + batch_size]
                sums, tokens_run = _score_batch(lm, prefix, prefix_length, [(requests[i], label) for i, label in batch])
                for (i, label), value in zip(batch, sums):
                    logprobs[i][label] = value
                forwarded += tokens_run
                bar.update(len(batch))
    scores = [
        LabelScores(tuple(values), tuple(len(ids) for ids in request.continuation_ids))
        for values, request in zip(logprobs, requests)
    ]
    scored = sum(len(r.context_ids) * len(r.continuation_ids) + sum(map(len, r.continuation_ids)) for r in requests)
    return scores, ScoringStats(scored, forwarded, time.perf_counter() - start)


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


def _encode_prefix(lm: LanguageModel, ids: tuple[int, ...]) -> PrefixCache:
    input_ids = torch.tensor([ids], device=lm.device)
    output = lm.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    return [(keys, values) for keys, values, *_ in output.cache]


def _score_batch(
    lm: LanguageModel, prefix: PrefixCache | None, prefix_length: int, rows: Sequence[tuple[ScoringRequest, int]]
) -> tuple[list[float], int]:
    """Summed continuation log-probs of each row, and the number of real tokens run."""
    inputs, starts, targets = [], [], []
    for request, label in rows:
        continuation = request.continuation_ids[label]
        sequence = request.context_ids[prefix_length:] + continuation
        inputs.append(sequence[:-1])  # the last token predicts nothing we need
        starts.append(len(request.context_ids) - prefix_length - 1)  # position predicting the first label token
        targets.append(continuation)
    batch, width = len(rows), max(map(len, inputs))
    span = max(map(len, targets))
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0  # GPT-2 has none
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, prefix_length + width), dtype=torch.long)
    attention_mask[:, :prefix_length] = 1
    keep = torch.zeros((batch, span), dtype=torch.long)  # positions whose logits are needed
    target_ids = torch.zeros((batch, span), dtype=torch.long)
    valid = torch.zeros((batch, span), dtype=torch.bool)
    for row, (ids, start, target) in enumerate(zip(inputs, starts, targets)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, prefix_length : prefix_length + len(ids)] = 1  # right padding stays masked
        keep[row] = start + torch.arange(span).clamp(max=len(target) - 1)
        target_ids[row, : len(target)] = torch.tensor(target)
        valid[row, : len(target)] = True
    position_ids = (prefix_length + torch.arange(width)).expand(batch, width)
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
    token_logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, target_ids.to(device)[..., None])[..., 0]
    sums = torch.where(valid.to(device), token_logprobs, 0.0).sum(dim=-1)
    return sums.tolist(), sum(map(len, inputs))
