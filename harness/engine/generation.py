"""Greedy generation over any backend: short answers (kind: generate) and the generation scorer (outputs parsed to
labels). The journal, the order of decoding, the prefix groups and halving on out-of-memory are here, once; the
decoding itself is the backend's (the HF backend's continuous batching: harness/engine/hf/decoder.py). For
instruction-tuned models that answer rather than rank, an output that names no label is recorded with
prediction null and counts as wrong.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from tqdm import tqdm

from harness.engine.backend import Backend, GenerationRequest, OutOfMemory
from harness.engine.journal import Journal
from harness.engine.request import ScoringRequest, shared_prefix_length
from harness.engine.scoring import ScoringStats, out_of_memory
from harness.errors import HarnessError


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
    lm: Backend,
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


def generate_texts(
    lm: Backend,
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

    The backend decodes at most `batch_size` requests at once (the HF backend keeps that many rows busy:
    continuous batching), in the order given here: group by group (requests sharing a prefix: the same
    instruction and demonstrations; a request alone in its group has none), longest context first. On
    OutOfMemory with batch_size=auto the unfinished requests start again on half the rows.
    """
    start = time.perf_counter()
    done = journal.results if journal is not None else {}
    outputs: dict[int, tuple[str, int]] = {index: (text, count) for index, (text, count) in done.items()}
    forwarded = sum(journal.tokens.values()) if journal is not None else 0
    groups = _groups(requests)
    rows = batch_size or lm.auto_batch_size
    with tqdm(total=len(requests), initial=len(done), unit="ex", desc="generating", disable=not progress,
              dynamic_ncols=True) as bar:
        while len(outputs) < len(requests):
            waiting = _in_order(requests, groups, [i for i in range(len(requests)) if i not in outputs])
            forwarded += sum(dict((request.group, request.shared) for request in waiting).values())  # run once each
            try:
                for finished in lm.generate_until(waiting, max_new_tokens, until, rows):
                    if journal is not None:
                        journal.record([finished.index], [[finished.text, finished.new_tokens]],
                                       finished.tokens_forwarded)
                    outputs[finished.index] = (finished.text, finished.new_tokens)
                    forwarded += finished.tokens_forwarded
                    bar.update(1)
            except OutOfMemory:
                if batch_size is not None or rows == 1:
                    raise HarnessError(out_of_memory(rows, rows, "rows")) from None
                rows //= 2  # as map_batches: a request's tokens do not depend on its neighbours (but float rounding)
    texts = [cut_at_stop(outputs[index][0], until) for index in range(len(requests))]
    context_tokens = sum(len(r.context_ids) for r in requests)
    generated_tokens = sum(count for _, count in outputs.values())
    return texts, ScoringStats(context_tokens + generated_tokens, forwarded, time.perf_counter() - start)


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string."""
    for stop in until:
        text = text.split(stop, 1)[0]
    return text


def _groups(requests: Sequence[ScoringRequest]) -> dict[int, tuple[tuple[object, ...] | None, int]]:
    """Each request's prefix group and the context tokens the group shares: (None, 0) for a request alone."""
    members: dict[tuple[object, ...], list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        members[request.prefix_group].append(index)
    groups: dict[int, tuple[tuple[object, ...] | None, int]] = {}
    for group, indices in members.items():
        shared = shared_prefix_length([requests[i].context_ids for i in indices]) if len(indices) > 1 else 0
        for index in indices:
            groups[index] = (group, shared) if len(indices) > 1 else (None, 0)
    return groups


def _in_order(requests: Sequence[ScoringRequest], groups: dict[int, tuple[tuple[object, ...] | None, int]],
              indices: list[int]) -> list[GenerationRequest]:
    """These requests in decoding order: group by group (in order of first appearance), longest context first."""
    first_seen: dict[tuple[object, ...] | None, int] = {}
    for index in indices:
        first_seen.setdefault(groups[index][0], len(first_seen))
    order = sorted(indices, key=lambda i: (first_seen[groups[i][0]], -len(requests[i].context_ids)))
    return [GenerationRequest(index=i, context_ids=requests[i].context_ids, group=groups[i][0], shared=groups[i][1])
            for i in order]
