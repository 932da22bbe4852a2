"""Classification (`kind: classify`): one fixed set of labels for every item (sentiment, topic, NLI).

scorer=rank scores each label's verbalizer after the prompt (direct); scorer=channel scores the input after a
prompt that ends in each label's verbalizer (Min et al. 2022); scorer=generate decodes greedily and parses the
output's first line to a label. A calibration (harness/kinds/calibration.py) adds a few prompts per distinct
demonstration set, scored in the same pass so they share its prefix: the content-free inputs, or the domain
premise for PMI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.config import RunConfig, Scorer, TaskConfig
from harness.engine.backend import Backend
from harness.engine.generation import generate_labels
from harness.engine.request import ScoringRequest, build_requests
from harness.engine.scoring import ScoringStats, score_requests
from harness.errors import HarnessError
from harness.inputs.data import Example
from harness.inputs.prompts import Prompt, Template, build_channel_prompts, build_prompt, is_channel
from harness.kinds.base import Answers, Items, Measured, OpenJournal, Predicted, TaskKind, measure_items, register_kind
from harness.kinds.calibration import argmax_first, calibration, expected_calibration_error, label_distribution
from harness.metrics.functions import NO_LABEL
from harness.metrics.registry import MetricInputs, measure


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
    config: RunConfig,
    batch_size: int | None,
    progress: bool,
    open_journal: OpenJournal | None = None,
    batch_tokens: int | None = None,
) -> Classification:
    """Predictions for `examples` by scorer=rank or channel, calibrated as config.calibration says; open_journal
    (given every request this scores) gives the journal that keeps finished batches across an interruption."""
    labels = len(template.verbalizers)
    channel = config.scorer == Scorer.channel
    if channel:
        prompts = [prompt for demos, example in zip(demonstrations, examples)
                   for prompt in build_channel_prompts(template, demos, example)]
    else:
        prompts = [build_prompt(template, demos, example) for demos, example in zip(demonstrations, examples)]
    requests = build_requests(prompts, lm)
    per_example = requests[::labels] if channel else requests

    # calibration prompts, once per demonstration set actually in the context (after any were dropped to fit)
    method = calibration(config.calibration)
    extra: dict[tuple[str, ...], list[Prompt]] = {}
    for request, demos in zip(per_example, demonstrations):
        if request.demo_ids not in extra:
            extra[request.demo_ids] = method.prompts(template, demos[request.dropped_demos :], fields, config)
    extra_prompts = [prompt for group in extra.values() for prompt in group]
    extra_requests = build_requests(extra_prompts, lm)
    everything = [*requests, *extra_requests]
    journal = open_journal(everything) if open_journal is not None else None
    all_scores, stats = score_requests(lm, everything, batch_size, config.prefix_cache, progress, journal,
                                       batch_tokens=batch_tokens)

    def values(index: int) -> list[float]:
        score = all_scores[index]
        if config.normalize == "mean":
            return [value / count for value, count in zip(score.logprobs, score.token_counts)]
        return list(score.logprobs)

    if channel:  # one request per (example, label), one continuation each
        scores = np.array([[values(i * labels + j)[0] for j in range(labels)] for i in range(len(examples))])
    else:
        scores = np.array([values(i) for i in range(len(examples))])
    calibration_scores: dict[tuple[str, ...], list[list[float]]] = {}
    position = len(requests)
    for key, group in extra.items():
        calibration_scores[key] = [values(position + offset) for offset in range(len(group))]
        position += len(group)

    raw = label_distribution(scores)
    probabilities, predictions = method.apply(scores, [calibration_scores[r.demo_ids] for r in per_example])
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


@register_kind
class ClassificationKind(TaskKind):
    name = "classify"
    title = "a classification task"
    answers = Answers.label
    lmeval_output_type = "multiple_choice"

    def lmeval_output_type_for(self, scorer: str) -> str:
        return "generate_until" if scorer == Scorer.generate else self.lmeval_output_type

    def check(self, config: RunConfig) -> None:
        task = config.task
        if not task.labels:
            raise HarnessError(f"task '{task.name}' has no labels (a multiple-choice task says kind: choice)")
        method = calibration(config.calibration)
        if method.calibrates and config.scorer != Scorer.rank:
            raise HarnessError(f"calibration={config.calibration} applies to scorer=rank, not scorer={config.scorer}")
        method.check(config)

    def check_template(self, template: Template, config: RunConfig) -> None:
        channel = is_channel(template, config.task.fields)
        if channel and config.scorer != Scorer.channel:
            raise HarnessError(f"template '{template.name}' puts the answer before the input (a channel template): "
                               "use scorer=channel")
        if config.scorer == Scorer.channel and not channel:
            raise HarnessError(f"scorer=channel needs a template that puts {{{{ answer }}}} before the input "
                               f"(a channel_* template), not '{template.name}'")

    def suits(self, template: Template, config: RunConfig) -> bool:
        return is_channel(template, config.task.fields) == (config.scorer == Scorer.channel)

    def requests_per_item(self, items: Items) -> int:
        return len(items.labels) if items.config.scorer == Scorer.channel else 1  # channel: a request per label

    def predict(self, items: Items) -> Predicted:
        config = items.config
        if config.scorer == Scorer.generate:
            return _generated(items)
        result = classify(items.backend, items.template, config.task.fields, items.examples, items.demonstrations,
                          config, items.batch_size, items.progress, items.open_journal, items.batch_tokens)
        labels = items.labels
        details = [{"scores": dict(zip(labels, scores.tolist())), "probabilities": dict(zip(labels, probs.tolist()))}
                   for scores, probs in zip(result.scores, result.probabilities)]
        calibrated = calibration(config.calibration).calibrates
        return Predicted(
            requests=result.requests, predictions=result.predictions, details=details, stats=result.stats,
            inference_tokens=result.inference_tokens, probabilities=result.probabilities,
            uncalibrated=(result.uncalibrated_predictions, result.uncalibrated_probabilities) if calibrated else None,
            calibration_scores=[{"demo_ids": list(key), "scores": [dict(zip(labels, row)) for row in rows]}
                                for key, rows in result.calibration_scores.items()] if calibrated else None,
        )

    def measure(self, task: TaskConfig, labels: Sequence[str], examples: Sequence[Example],
                predicted: Predicted) -> Measured:
        references = [labels.index(example.label) for example in examples]
        measured = measure_items(task, examples, lambda name, rows: MetricInputs(
            predictions=[predicted.predictions[i] for i in rows], references=[references[i] for i in rows]))
        metrics = measured.metrics
        if predicted.probabilities is None:  # scorer=generate: outputs that named no label
            metrics["no_label_rate"] = predicted.predictions.count(NO_LABEL) / len(references)
            return measured
        metrics["ece"] = expected_calibration_error(predicted.probabilities, references)
        if predicted.uncalibrated is None:
            return measured
        predictions, probabilities = predicted.uncalibrated
        uncalibrated: dict[str, float] = {}
        for name in task.metrics:
            uncalibrated.update(measure(name, MetricInputs(predictions=predictions, references=references))[0])
        uncalibrated["ece"] = expected_calibration_error(probabilities, references)
        return Measured(metrics, measured.stderr, measured.by, uncalibrated)


def _generated(items: Items) -> Predicted:
    """scorer=generate: greedy decoding, the output's first line parsed to a label."""
    config = items.config
    prompts = [build_prompt(items.template, demos, example)
               for demos, example in zip(items.demonstrations, items.examples)]
    requests = build_requests(prompts, items.backend, answer_tokens=config.max_new_tokens)
    journal = items.open_journal(requests)
    generations, stats = generate_labels(items.backend, requests, list(items.template.verbalizers.values()),
                                         config.max_new_tokens, items.batch_size, items.progress, journal)
    return Predicted(
        requests=requests, predictions=[NO_LABEL if g.label is None else g.label for g in generations],
        details=[{"generation": g.text} for g in generations], stats=stats, inference_tokens=stats.tokens_scored,
    )
