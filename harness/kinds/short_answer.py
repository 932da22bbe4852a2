"""Short answers (`kind: generate`: TriviaQA, Natural Questions, GSM8K): a greedy answer per item, right when it
matches one of the item's accepted answers once both are normalised as lm-evaluation-harness's exact_match does;
each named answer filter (task.answer.filters, GSM8K's strict and flexible) is scored as exact_match_<name>."""

from __future__ import annotations

from typing import Sequence

from harness.config import RunConfig, TaskConfig
from harness.engine.generation import generate_texts
from harness.engine.request import build_requests
from harness.inputs.data import Example
from harness.inputs.prompts import build_prompt
from harness.kinds.base import Answers, Items, Measured, Predicted, TaskKind, check_own_answers, register_kind
from harness.kinds.multiple_choice import measure_chosen
from harness.metrics.functions import NO_LABEL, extracted_answer, matching_answer
from harness.metrics.registry import NAMED_EXTRACTION


@register_kind
class ShortAnswerKind(TaskKind):
    name = "generate"
    title = "a short-answer task"
    answers = Answers.options
    lmeval_output_type = "generate_until"
    # How an answer is cut and compared, versioned in the run key of these tasks: records made under other rules
    # are not reused. 2: both ends of the answer stripped, as lm-evaluation-harness 0.4.13's remove_whitespace
    # (1: the start only).
    answer_rules = 2

    def metric_names(self, task: TaskConfig) -> tuple[str, ...]:
        return ("exact_match", *(f"{NAMED_EXTRACTION}{name}" for name in task.answer.filters))

    def check(self, config: RunConfig) -> None:
        check_own_answers(self, config)

    def predict(self, items: Items) -> Predicted:
        spec = items.config.task.answer
        prompts = [build_prompt(items.template, demos, example)
                   for demos, example in zip(items.demonstrations, items.examples)]
        requests = build_requests(prompts, items.backend, answer_tokens=spec.max_new_tokens)
        texts, stats = generate_texts(items.backend, requests, spec.max_new_tokens, spec.until, items.batch_size,
                                      items.progress, items.open_journal(requests))
        # lm-evaluation-harness 0.4.13's remove_whitespace filter strips both ends (before 0.4.10 or so: the start only)
        answers = [text.strip() for text in texts]
        # each named filter reads the generation as it came (GSM8K's regexes), the plain match its stripped text
        extracted = {name: [extracted_answer(text, rule) for text in texts] for name, rule in spec.filters.items()}

        def matched(candidates: Sequence[str]) -> list[int | None]:
            return [matching_answer(answer, example.choices, spec) for answer, example in zip(candidates, items.examples)]

        def right(found: Sequence[int | None]) -> list[int]:
            return [NO_LABEL if match is None else example.gold for match, example in zip(found, items.examples)]

        matches = matched(answers)
        chosen = {"exact_match": right(matches), **{f"{NAMED_EXTRACTION}{name}": right(matched(values))
                                                    for name, values in extracted.items()}}
        return Predicted(
            requests=requests, predictions=chosen["exact_match"],
            details=[{"generation": answer, "matched": None if match is None else example.choices[match],
                      **({"extracted": {name: values[i] for name, values in extracted.items()},
                          "right": {metric: chosen[metric][i] != NO_LABEL for metric in chosen}} if extracted else {})}
                     for i, (answer, match, example) in enumerate(zip(answers, matches, items.examples))],
            stats=stats, inference_tokens=stats.tokens_scored, chosen=chosen,
        )

    def measure(self, task: TaskConfig, labels: Sequence[str], examples: Sequence[Example],
                predicted: Predicted) -> Measured:
        return measure_chosen(task, examples, predicted)

    def prediction_text(self, prediction: int, labels: Sequence[str]) -> str | None:
        return None if prediction < 0 else str(prediction)
