"""Cloze (`kind: cloze`, LAMBADA): every item has one right continuation, scored alone after its context: its
log-likelihood and whether it is the model's greedy continuation, as lm-evaluation-harness's loglikelihood tasks.
acc is the share of items whose target is the greedy continuation; perplexity and bits_per_byte come from the
targets' log-likelihoods (harness/metrics/registry.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from harness.config import RunConfig, TaskConfig
from harness.inputs.data import Example
from harness.kinds.base import (
    Answers,
    Items,
    Measured,
    Predicted,
    TaskKind,
    check_own_answers,
    measure_items,
    register_kind,
)
from harness.kinds.multiple_choice import score_choices
from harness.metrics.functions import NO_LABEL
from harness.metrics.registry import MetricInputs


@register_kind
class ClozeKind(TaskKind):
    name = "cloze"
    title = "a cloze task"
    answers = Answers.options
    lmeval_output_type = "loglikelihood"
    metrics = ("acc", "perplexity", "bits_per_byte")

    def check(self, config: RunConfig) -> None:
        check_own_answers(self, config)

    def predict(self, items: Items) -> Predicted:
        # only the right continuation is scored (a row may list several): one request with one continuation per item
        targets = [replace(example, choices=(example.choices[example.gold],), gold=0) for example in items.examples]
        result = score_choices(items.backend, items.template, targets, items.demonstrations, items.batch_size,
                               items.config.prefix_cache, items.progress, items.open_journal,
                               batch_tokens=items.batch_tokens)
        golds = [example.gold for example in items.examples]
        loglikelihoods = [scores[0] for scores in result.loglikelihoods]
        greedy = [flags[0] for flags in result.greedy]
        predictions = [gold if is_greedy else NO_LABEL for gold, is_greedy in zip(golds, greedy)]
        return Predicted(
            requests=result.requests, predictions=predictions,
            details=[{"target": example.choices[example.gold], "loglikelihood": value, "greedy": is_greedy}
                     for example, value, is_greedy in zip(items.examples, loglikelihoods, greedy)],
            stats=result.stats, inference_tokens=result.inference_tokens, chosen={"acc": predictions},
            loglikelihoods=loglikelihoods, target_bytes=[len(texts[0].encode("utf-8")) for texts in result.continuations],
        )

    def measure(self, task: TaskConfig, labels: Sequence[str], examples: Sequence[Example],
                predicted: Predicted) -> Measured:
        golds = [example.gold for example in examples]
        return measure_items(task, examples, lambda name, rows: MetricInputs(
            predictions=[predicted.predictions[i] for i in rows], references=[golds[i] for i in rows],
            loglikelihoods=[predicted.loglikelihoods[i] for i in rows],
            text_bytes=[predicted.target_bytes[i] for i in rows]))

    def prediction_text(self, prediction: int, labels: Sequence[str]) -> str | None:
        return None if prediction < 0 else str(prediction)
