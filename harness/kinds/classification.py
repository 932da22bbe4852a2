"""Rank classification of a run's test examples: prompts -> requests -> label scores -> predictions.

scorer=rank scores each label's verbalizer after the prompt (direct); scorer=channel scores the
input after a prompt that ends in each label's verbalizer (Min et al. 2022). Calibration
(harness/kinds/calibration.py) adds a few prompts per distinct demonstration set, scored in the same
pass so they share its prefix cache: the content-free inputs, or the domain premise for PMI.
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
from harness.inputs.prompts import (
    Prompt,
    Template,
    build_channel_prompts,
    build_prompt,
    content_free_prompt,
    domain_premise_prompt,
)
from harness.kinds.calibration import (
    argmax_first,
    content_free_distribution,
    contextual_calibration,
    label_distribution,
    pmi_scores,
)


@dataclass(frozen=True)
class Classification:
    predictions: list[int]
    probabilities: np.ndarray  # (examples, labels): the label distribution the predictions come from
    scores: np.ndarray  # (examples, labels): log-prob per label (mean per token with normalize=mean)
    uncalibrated_predictions: list[int]  # equal to predictions with calibration=none
    uncalibrated_probabilities: np.ndarray
    requests: list[ScoringRequest]  # per example (channel: its first label's), for the demonstrations it saw
    calibration_scores: dict[tuple[str, ...], list[list[float]]]  # per demonstration set: scores of its extra prompts
    stats: ScoringStats
    inference_tokens: int  # what scoring needs at the least: each context once, then every label's tokens


def classify(
    lm: Backend,
    template: Template,
    fields: Sequence[str],
    examples: Sequence[Example],
    demonstrations: Sequence[Sequence[Example]],
    scorer: str,
    calibration: str,
    content_free_inputs: Sequence[str],
    normalize: str,
    batch_size: int | None,
    prefix_cache: bool,
    progress: bool,
    open_journal: Callable[[Sequence[ScoringRequest]], Journal] | None = None,
) -> Classification:
    """Predictions for `examples`; open_journal (given every request this scores) gives the journal that
    keeps finished batches across an interruption."""
    labels = len(template.verbalizers)
    if scorer == "channel":
        prompts = [prompt for demos, example in zip(demonstrations, examples)
                   for prompt in build_channel_prompts(template, demos, example)]
    else:
        prompts = [build_prompt(template, demos, example) for demos, example in zip(demonstrations, examples)]
    requests = build_requests(prompts, lm)
    per_example = requests[::labels] if scorer == "channel" else requests

    # calibration prompts, once per demonstration set actually in the context (after any were dropped to fit)
    extra: dict[tuple[str, ...], list[Prompt]] = {}
    if calibration != "none":
        for request, demos in zip(per_example, demonstrations):
            if request.demo_ids not in extra:
                kept = demos[request.dropped_demos :]
                extra[request.demo_ids] = (
                    [content_free_prompt(template, kept, fields, text) for text in content_free_inputs]
                    if calibration == "contextual" else [domain_premise_prompt(template, kept, fields)]
                )
    extra_prompts = [prompt for group in extra.values() for prompt in group]
    extra_requests = build_requests(extra_prompts, lm)
    everything = [*requests, *extra_requests]
    journal = open_journal(everything) if open_journal is not None else None
    all_scores, stats = score_requests(lm, everything, batch_size, prefix_cache, progress, journal)

    def values(index: int) -> list[float]:
        score = all_scores[index]
        if normalize == "mean":
            return [value / count for value, count in zip(score.logprobs, score.token_counts)]
        return list(score.logprobs)

    if scorer == "channel":  # one request per (example, label), one continuation each
        scores = np.array([[values(i * labels + j)[0] for j in range(labels)] for i in range(len(examples))])
    else:
        scores = np.array([values(i) for i in range(len(examples))])
    calibration_scores: dict[tuple[str, ...], list[list[float]]] = {}
    position = len(requests)
    for key, group in extra.items():
        calibration_scores[key] = [values(position + offset) for offset in range(len(group))]
        position += len(group)

    raw = label_distribution(scores)
    if calibration == "contextual":
        content_free = {key: content_free_distribution(rows) for key, rows in calibration_scores.items()}
        probabilities = contextual_calibration(raw, np.stack([content_free[r.demo_ids] for r in per_example]))
        predictions = argmax_first(probabilities)
    elif calibration == "pmi":
        adjusted = pmi_scores(scores, [calibration_scores[r.demo_ids][0] for r in per_example])
        probabilities, predictions = label_distribution(adjusted), argmax_first(adjusted)
    else:
        probabilities, predictions = raw, argmax_first(scores)
    inference_tokens = sum(len(r.context_ids) + sum(map(len, r.continuation_ids)) for r in requests)
    return Classification(
        predictions=predictions,
        probabilities=probabilities,
        scores=scores,
        uncalibrated_predictions=argmax_first(scores),
        uncalibrated_probabilities=raw,
        requests=list(per_example),
        calibration_scores=calibration_scores,
        stats=stats,
        inference_tokens=inference_tokens,
    )
