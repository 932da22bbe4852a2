"""Multiple-choice items: prompts -> requests -> one log-likelihood per option -> predictions.

Every item brings its own options (ARC, HellaSwag, PIQA, MMLU, ...). With an ordinary template the
options are continuations of one context, so the context runs once and each option only its own
tokens on top of its keys and values (harness/engine/scoring.py). With a partial-scoring template
(Winogrande) each option sits in its own context and the same text after it is scored.

Three predictions come from the same log-likelihoods, as in lm-evaluation-harness: `acc` takes the
option with the highest total log-likelihood, `acc_norm` divides it by the option's length in
characters, `acc_bytes` by its length in UTF-8 bytes (the option's own text, without the whitespace
before it). Ties go to the first option.

`acc_mutual_info`, when a task lists it, takes the option with the highest log P(option | context) -
log P(option): the second term is the same continuation scored after the model's prefix token alone
(lm-evaluation-harness's unconditional requests, context ""). An option that several items have (MMLU's
" A" .. " D") is scored so once. It needs the options as continuations: with partial scoring the
continuation is the same text for every option, so there is nothing to divide out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from harness.engine.backend import Backend
from harness.engine.journal import Journal
from harness.engine.request import ScoringRequest, build_requests
from harness.engine.scoring import ScoringStats, score_requests
from harness.inputs.data import Example
from harness.inputs.prompts import Template, build_partial_prompts, build_prompt
from harness.metrics.functions import MUTUAL_INFO

NORMALIZATIONS = {"acc": None, "acc_norm": "characters", "acc_bytes": "bytes"}


@dataclass(frozen=True)
class ChoiceScores:
    loglikelihoods: list[list[float]]  # per item, per option: the summed log-probability of its continuation
    greedy: list[list[bool]]  # per item, per option: its continuation is the model's greedy one
    continuations: list[list[str]]  # per item, per option: the text scored (with the whitespace before it)
    predictions: dict[str, list[int]]  # "acc", "acc_norm", "acc_bytes" (, MUTUAL_INFO) -> the chosen option per item
    unconditional: list[list[float]] | None  # MUTUAL_INFO: per item, per option: its log-likelihood with no context
    requests: list[ScoringRequest]  # per item (partial scoring: its first option's), for the demonstrations it saw
    stats: ScoringStats
    inference_tokens: int  # each context once, then every option's tokens


def score_choices(
    lm: Backend,
    template: Template,
    examples: Sequence[Example],
    demonstrations: Sequence[Sequence[Example]],
    batch_size: int | None,
    prefix_cache: bool,
    progress: bool,
    open_journal: Callable[[Sequence[ScoringRequest]], Journal] | None = None,
    mutual_info: bool = False,
) -> ChoiceScores:
    partial = template.continuation is not None  # mutual_info needs it False (harness/runs/plan.py checks)
    if partial:
        per_item = [build_partial_prompts(template, demos, example) for demos, example in zip(demonstrations, examples)]
    else:
        per_item = [[build_prompt(template, demos, example)] for demos, example in zip(demonstrations, examples)]
    requests = build_requests([prompt for prompts in per_item for prompt in prompts], lm)
    # MUTUAL_INFO: a request per distinct option, after the items' requests (as the calibration prompts of
    # classification: a journal counts items below them). One continuation each, so it runs in its own row after
    # the prefix token, as lm-evaluation-harness's do: a 1-token context shares nothing worth a pass of its own
    # (ARC-Easy, 50 items, scoring: 12.5 s for acc alone; with acc_mutual_info 15.1 s so, 20.3 s with each item's
    # options on top of one shared prefix token)
    option_rows: dict[tuple[int, ...], int] = {}
    if mutual_info:
        for request in requests:
            for option in request.continuation_ids:
                option_rows.setdefault(option, len(option_rows))
    unconditional_requests = [ScoringRequest(context_ids=(lm.prefix_token_id,), continuation_ids=(option,), demo_ids=(),
                                             dropped_demos=0, unconditional=True) for option in option_rows]
    journal = open_journal(requests + unconditional_requests) if open_journal is not None else None
    scores, stats = score_requests(lm, requests + unconditional_requests, batch_size, prefix_cache, progress, journal)
    loglikelihoods, greedy, item_requests, position = [], [], [], 0
    continuations = [[text for prompt in prompts for text in prompt.continuations] for prompts in per_item]
    for prompts in per_item:
        if partial:  # one request per option, one continuation each
            loglikelihoods.append([scores[position + i].logprobs[0] for i in range(len(prompts))])
            greedy.append([scores[position + i].greedy[0] for i in range(len(prompts))])
        else:
            loglikelihoods.append(list(scores[position].logprobs))
            greedy.append(list(scores[position].greedy))
        item_requests.append(requests[position])
        position += len(prompts)
    options = [template.answers(example) for example in examples]
    predictions = {name: choose(loglikelihoods, options, by) for name, by in NORMALIZATIONS.items()}
    unconditional = None
    if mutual_info:
        unconditional = [[scores[len(requests) + option_rows[option]].logprobs[0] for option in request.continuation_ids]
                         for request in item_requests]
        predictions[MUTUAL_INFO] = [int(np.argmax(np.asarray(values, dtype=np.float64) - np.asarray(alone)))
                                    for values, alone in zip(loglikelihoods, unconditional)]
    inference_tokens = sum(len(r.context_ids) + sum(map(len, r.continuation_ids))
                           for r in requests + unconditional_requests)
    return ChoiceScores(
        loglikelihoods=loglikelihoods,
        greedy=greedy,
        continuations=continuations,
        predictions=predictions,
        unconditional=unconditional,
        requests=item_requests,
        stats=stats,
        inference_tokens=inference_tokens,
    )


def choose(loglikelihoods: Sequence[Sequence[float]], options: Sequence[Sequence[str]], by: str | None) -> list[int]:
    """The best option per item: highest log-likelihood, or per character / per byte of the option's text."""
    chosen = []
    for values, texts in zip(loglikelihoods, options):
        lengths = {None: [1] * len(texts), "characters": [len(text) for text in texts],
                   "bytes": [len(text.encode("utf-8")) for text in texts]}[by]
        lengths = [max(length, 1) for length in lengths]  # an empty option: its total, not a division by zero
        chosen.append(int(np.argmax(np.asarray(values, dtype=np.float64) / np.asarray(lengths))))
    return chosen
