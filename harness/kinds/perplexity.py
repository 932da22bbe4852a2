"""Perplexity (`kind: perplexity`, wikitext): every item is a text, scored whole by its rolling log-likelihood
(harness/engine/rolling.py); word and byte perplexity and bits per byte are ratios of sums over the corpus, as
lm-evaluation-harness's loglikelihood_rolling tasks."""

from __future__ import annotations

import itertools
from typing import Sequence

from harness.config import RunConfig, TaskConfig
from harness.engine.request import ScoringRequest
from harness.engine.rolling import score_documents
from harness.errors import HarnessError
from harness.finetune.method import learning_method
from harness.inputs.data import Example
from harness.kinds.base import Answers, Items, Measured, Predicted, TaskKind, measure_items, register_kind
from harness.kinds.calibration import calibration
from harness.metrics.functions import NO_LABEL, count_words
from harness.metrics.registry import MetricInputs

_NO_WINDOW = ScoringRequest(context_ids=(), continuation_ids=(), demo_ids=(), dropped_demos=0)  # an empty text


@register_kind
class PerplexityKind(TaskKind):
    name = "perplexity"
    title = "a perplexity task"
    answers = Answers.text
    lmeval_output_type = "loglikelihood_rolling"
    metrics = ("word_perplexity", "byte_perplexity", "bits_per_byte")
    template_answer = False

    def check(self, config: RunConfig) -> None:
        task = config.task
        if task.labels:
            raise HarnessError(f"task '{task.name}' scores whole texts (kind: perplexity), so it has no labels")
        refused = {"shots": config.shots != 0, "method": learning_method(config.method.name).trains,
                   "scorer": config.scorer != "rank",
                   "calibration": calibration(config.calibration).calibrates, "normalize": config.normalize != "sum"}
        allowed = {"shots": 0, "method": "icl", "scorer": "rank", "calibration": "none", "normalize": "sum"}
        for key, wrong in refused.items():
            if wrong:
                value = config.method.name if key == "method" else getattr(config, key)
                raise HarnessError(f"task '{task.name}' scores whole texts by their rolling log-likelihood (kind: "
                                   f"perplexity): {key}={value} does not apply ({key}={allowed[key]} only)")

    def predict(self, items: Items) -> Predicted:
        texts = [items.template.render(example, "") for example in items.examples]
        field = items.config.task.units_field
        counted = texts if field is None else [str(example.fields[field]) for example in items.examples]
        result = score_documents(items.backend, texts, items.batch_size, items.progress, items.open_journal)
        first_windows = list(itertools.accumulate([0, *result.windows[:-1]]))
        return Predicted(
            requests=[result.requests[i] if count else _NO_WINDOW for i, count in zip(first_windows, result.windows)],
            predictions=[NO_LABEL] * len(texts),
            details=[{"loglikelihood": value, "tokens": tokens, "windows": windows, "words": count_words(text),
                      "bytes": len(text.encode("utf-8"))}
                     for value, tokens, windows, text in zip(result.loglikelihoods, result.tokens, result.windows,
                                                             counted)],
            stats=result.stats, inference_tokens=sum(result.tokens), loglikelihoods=result.loglikelihoods,
            target_bytes=[len(text.encode("utf-8")) for text in counted],
        )

    def measure(self, task: TaskConfig, labels: Sequence[str], examples: Sequence[Example],
                predicted: Predicted) -> Measured:
        words = [detail["words"] for detail in predicted.details]
        return measure_items(task, examples, lambda name, rows: MetricInputs(
            loglikelihoods=[predicted.loglikelihoods[i] for i in rows], words=[words[i] for i in rows],
            text_bytes=[predicted.target_bytes[i] for i in rows]))
