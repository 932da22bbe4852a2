"""The HF backend's log-likelihoods: rank classification computed in three nested levels so that nothing shared is
run twice:

1. the prefix shared by a group of requests (the engine gives its length: the longest common token prefix of a
   group's contexts, plus a soft prompt after prompt tuning) runs once per group (HFBackend.loglikelihood keeps
   it for the group's next batches); at 0 shots MMLU's items form a group per subject, whose instruction names it;
2. each request's own context tokens (the query) run once, on top of the prefix; the query's last position gives
   the next-token distribution that scores every single-token verbalizer at once;
3. multi-token verbalizers run only their own tokens, on top of the query's keys and values, one row per
   distinct stem (the tokens before a verbalizer's last token), all labels sharing that stem together. A
   request with a single continuation (a cloze target) runs it in the query's own row instead: nothing is
   shared, so one pass does it.

With prefix_cache=False level 1 is empty. Every level uses the very token ids of the plain whole-context
encoding, so the scores equal a full recompute up to float rounding (tested).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Sequence

import torch
from transformers import DynamicCache

from harness.engine.backend import Scores
from harness.engine.hf.forward import SharedPrefix, forward_rows
from harness.engine.request import ScoringRequest, whole_rows

if TYPE_CHECKING:
    from harness.engine.hf.backend import HFBackend


def score_batch(lm: HFBackend, prefix: SharedPrefix | None, prefix_length: int,
                requests: Sequence[ScoringRequest]) -> tuple[Scores, int]:
    """Every label's (log-prob, greedy) for each request of the batch, and the number of real tokens run.

    `prefix` holds the soft prompt (if any) and the first `prefix_length` context tokens of every request.
    """
    queries = [request.context_ids[prefix_length:] for request in requests]
    # Each row of the first pass is a request's query with one continuation after it (its own row: a plain
    # forward pass, as a full recompute does) or with none (shared: the continuations run after it, level 3).
    rows: list[tuple[int, int | None]] = []  # (request, continuation, or None for a shared query row)
    for index, (query, request) in enumerate(zip(queries, requests)):
        if whole_rows(len(query), request.continuation_ids):
            rows.extend((index, label) for label in range(len(request.continuation_ids)))
        else:
            rows.append((index, None))
    inline = [() if label is None else requests[index].continuation_ids[label] for index, label in rows]
    inputs = [queries[index] + ids[:-1] for (index, _), ids in zip(rows, inline)]
    past = None if prefix is None else prefix.cache(len(inputs), max(map(len, inputs)))
    span = max(1, *map(len, inline))
    query_mask, logits, query_cache = forward_rows(lm, past, inputs, [len(queries[index]) - 1 for index, _ in rows],
                                                   span=span)
    scores = _TokenScores(logits)  # from each row's last context token on
    values: list[list[tuple[float, bool]]] = [[(0.0, False)] * len(request.continuation_ids) for request in requests]
    for row, ((index, label), ids) in enumerate(zip(rows, inline)):
        if label is not None:
            values[index][label] = scores.of(row, 0, ids)
    stems: list[tuple[int, tuple[int, ...], list[int]]] = []  # (row, stem, labels sharing it)
    for row, (index, label) in enumerate(rows):
        if label is not None:
            continue
        by_stem: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for label_index, ids in enumerate(requests[index].continuation_ids):
            if len(ids) == 1:
                values[index][label_index] = scores.of(row, 0, ids)
            else:
                by_stem[ids[:-1]].append(label_index)
        stems.extend((row, stem, labels) for stem, labels in by_stem.items())
    tokens_run = sum(map(len, inputs))
    for start in range(0, len(stems), len(rows)):  # at most as many stem rows at once as query rows
        chunk = stems[start : start + len(rows)]
        chosen = torch.tensor([row for row, _, _ in chunk])
        cache = DynamicCache(ddp_cache_data=[(keys[chosen], values_[chosen]) for keys, values_ in query_cache])
        stem_inputs = [stem for _, stem, _ in chunk]
        _, stem_logits, _ = forward_rows(lm, cache, stem_inputs, [0] * len(chunk), span=max(map(len, stem_inputs)),
                                         cache_mask=query_mask[chosen])
        stem_scores = _TokenScores(stem_logits)
        for position, (row, stem, labels) in enumerate(chunk):
            # the query's last position predicts stem[0]; stem position j predicts stem[j + 1], then the last token
            first, first_greedy = scores.of(row, 0, stem[:1])
            rest, rest_greedy = stem_scores.of(position, 0, stem[1:])
            for label in labels:
                last, last_greedy = stem_scores.of(position, len(stem) - 1,
                                                   requests[rows[row][0]].continuation_ids[label][-1:])
                values[rows[row][0]][label] = (first + rest + last, first_greedy and rest_greedy and last_greedy)
        tokens_run += sum(map(len, stem_inputs))
    return values, tokens_run


class _TokenScores:
    """Log-probabilities of chosen tokens at chosen positions, from logits (rows, positions, vocabulary), gathered at
    once per continuation (no loop over tokens), with the greedy flags from one argmax. log_softmax as
    lm-evaluation-harness computes it: a logit minus a log-sum-exp gives other float32 roundings (1.5e-05 apart
    on the sentiment task), for no measurable time."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        self.best = self.logprobs.argmax(dim=-1)

    def of(self, row: int, start: int, tokens: Sequence[int]) -> tuple[float, bool]:
        """The summed log-probability of `tokens` at positions start, start + 1, ... of the row, and whether each
        is the most likely token there."""
        if not tokens:
            return 0.0, True
        positions = torch.arange(start, start + len(tokens))
        ids = torch.tensor(tokens)
        chosen = self.logprobs[row, positions, ids].tolist()
        return sum(chosen), bool((self.best[row, positions] == ids).all())
