"""Multiple choice (`kind: choice`): prompts -> requests -> one log-likelihood per option -> predictions.

Every item brings its own options (ARC, HellaSwag, PIQA, MMLU, ...). With an ordinary template the
options are continuations of one context, so the context runs once and each option only its own
tokens on top of its keys and values (harness/engine/scoring.py). With a partial-scoring template
(Winogrande) each option sits in its own context and the same text after it is scored.

Three predictions come from the same log-likelihoods, as in lm-evaluation-harness: `acc` takes the
option with the highest total log-likelihood, `acc_norm` divides it by the option's length in
characters, `acc_bytes` by its length in UTF-8 bytes (the option's own text, without the whitespace
before it). Ties go to the first option. (Each metric's way of choosing is its own: harness/metrics/registry.py.)

`acc_mutual_info`, when a task lists it, takes the option with the highest log P(option | context) -
log P(option): the second term is the same continuation scored after the model's prefix token alone
(lm-evaluation-harness's unconditional requests, context ""). An option that several items have (MMLU's
" A" .. " D") is scored so once. It needs the options as continuations: with partial scoring the
continuation is the same text for every option, so there is nothing to divide out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from harness.config import RunConfig, TaskConfig
from harness.engine.backend import Backend
from harness.engine.request import ScoringRequest, build_requests
from harness.engine.scoring import ScoringStats, score_requests
from harness.errors import HarnessError
from harness.inputs.data import Example
from harness.inputs.prompts import Template, build_partial_prompts, build_prompt
from harness.kinds.base import (
    Answers,
    Items,
    Measured,
    OpenJournal,
    Predicted,
    TaskKind,
    check_own_answers,
    measure_items,
    register_kind,
)
from harness.metrics.registry import METRICS, MetricInputs, Options, metric


@dataclass(frozen=True)
class ChoiceScores:
    loglikelihoods: list[list[float]]  # per item, per option: the summed log-probability of its continuation
    greedy: list[list[bool]]  # per item, per option: its continuation is the model's greedy one
    continuations: list[list[str]]  # per item, per option: the text scored (with the whitespace before it)
    predictions: dict[str, list[int]]  # per metric that chooses an option (acc, acc_norm, ...): the option per item
    unconditional: list[list[float]] | None  # acc_mutual_info: per item, per option: its log-likelihood with no context
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
    open_journal: OpenJournal | None = None,
    unconditional: Sequence[str] = (),
    batch_tokens: int | None = None,
) -> ChoiceScores:
    """Every option's log-likelihood and the option each metric chooses: the metrics that choose an option without
    their log-likelihoods after the prefix token alone, and those of `unconditional` (acc_mutual_info), which cost a
    request per distinct option."""
    partial = template.continuation is not None  # unconditional needs it False (MultipleChoiceKind.check_template)
    if partial:
        per_item = [build_partial_prompts(template, demos, example) for demos, example in zip(demonstrations, examples)]
    else:
        per_item = [[build_prompt(template, demos, example)] for demos, example in zip(demonstrations, examples)]
    requests = build_requests([prompt for prompts in per_item for prompt in prompts], lm)
    # acc_mutual_info: a request per distinct option, after the items' requests (as the calibration prompts of
    # classification: a journal counts items below them). One continuation each, so it runs in its own row after
    # the prefix token, as lm-evaluation-harness's do: a 1-token context shares nothing worth a pass of its own
    # (ARC-Easy, 50 items, scoring: 12.5 s for acc alone; with acc_mutual_info 15.1 s so, 20.3 s with each item's
    # options on top of one shared prefix token)
    option_rows: dict[tuple[int, ...], int] = {}
    if unconditional:
        for request in requests:
            for option in request.continuation_ids:
                option_rows.setdefault(option, len(option_rows))
    unconditional_requests = [ScoringRequest(context_ids=(lm.prefix_token_id,), continuation_ids=(option,), demo_ids=(),
                                             dropped_demos=0, unconditional=True) for option in option_rows]
    journal = open_journal(requests + unconditional_requests) if open_journal is not None else None
    scores, stats = score_requests(lm, requests + unconditional_requests, batch_size, prefix_cache, progress, journal,
                                   batch_tokens=batch_tokens)
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
    alone = [[scores[len(requests) + option_rows[option]].logprobs[0] for option in request.continuation_ids]
             for request in item_requests] if unconditional else None
    options = Options(loglikelihoods, [template.answers(example) for example in examples], alone)
    predictions = {name: spec.choose(options) for name, spec in METRICS.items()
                   if spec.choose is not None and (not spec.needs_unconditional or name in unconditional)}
    inference_tokens = sum(len(r.context_ids) + sum(map(len, r.continuation_ids))
                           for r in requests + unconditional_requests)
    return ChoiceScores(
        loglikelihoods=loglikelihoods,
        greedy=greedy,
        continuations=continuations,
        predictions=predictions,
        unconditional=alone,
        requests=item_requests,
        stats=stats,
        inference_tokens=inference_tokens,
    )


@register_kind
class MultipleChoiceKind(TaskKind):
    name = "choice"
    title = "multiple choice"
    answers = Answers.options
    lmeval_output_type = "multiple_choice"

    def check(self, config: RunConfig) -> None:
        check_own_answers(self, config)

    def check_template(self, template: Template, config: RunConfig) -> None:
        unconditional = _unconditional(config.task)
        if unconditional and template.continuation is not None:
            raise HarnessError(f"{unconditional[0]} needs the options as continuations; template '{template.name}' "
                               "places them in the context and scores the same text after each (partial scoring)")

    def requests_per_item(self, items: Items) -> int:
        if items.template.continuation is not None:  # partial scoring: a request per option
            return max((len(example.choices) for example in items.examples), default=1)
        return 1

    def predict(self, items: Items) -> Predicted:
        config = items.config
        result = score_choices(items.backend, items.template, items.examples, items.demonstrations, items.batch_size,
                               config.prefix_cache, items.progress, items.open_journal,
                               unconditional=_unconditional(config.task), batch_tokens=items.batch_tokens)
        details = [{"scores": scores, "chosen": {name: chosen[i] for name, chosen in result.predictions.items()},
                    **({} if result.unconditional is None else {"unconditional_scores": result.unconditional[i]})}
                   for i, scores in enumerate(result.loglikelihoods)]
        return Predicted(requests=result.requests, predictions=result.predictions["acc"], details=details,
                         stats=result.stats, inference_tokens=result.inference_tokens, chosen=result.predictions)

    def measure(self, task: TaskConfig, labels: Sequence[str], examples: Sequence[Example],
                predicted: Predicted) -> Measured:
        return measure_chosen(task, examples, predicted)

    def prediction_text(self, prediction: int, labels: Sequence[str]) -> str | None:
        return None if prediction < 0 else str(prediction)  # the option's index, as the gold is written


def _unconditional(task: TaskConfig) -> list[str]:
    """The task's metrics that need each option's log-likelihood without context (acc_mutual_info)."""
    return [name for name in task.metrics if (spec := metric(name)) is not None and spec.needs_unconditional]


def measure_chosen(task: TaskConfig, examples: Sequence[Example], predicted: Predicted) -> Measured:
    """Metrics of items that bring their answers: each metric over the option (or answer) it chose per item."""
    references = [example.gold for example in examples]
    chosen = {name: (predicted.chosen or {}).get(name, predicted.predictions) for name in task.metrics}
    return measure_items(task, examples, lambda name, rows: MetricInputs(
        predictions=[chosen[name][i] for i in rows], references=[references[i] for i in rows]))
