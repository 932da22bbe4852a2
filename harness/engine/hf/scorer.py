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
from harness.engine.request import ScoringRequest

if TYPE_CHECKING:
    from harness.engine.hf.backend import HFBackend


def score_batch(lm: HFBackend, prefix: SharedPrefix | None, prefix_length: int,
                requests: Sequence[ScoringRequest]) -> tuple[Scores, int]:
    """Every label's (log-prob, greedy) for each request of the batch, and the number of real tokens run.

    `prefix` holds the soft prompt (if any) and the first `prefix_length` context tokens of every request.
    """
    batch = range(len(requests))
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


