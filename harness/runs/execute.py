"""The stages of a run that need the model: prepare it, predict, measure, record.

harness/runs/run.py calls execute() once the plan is made, the inputs chosen and the run directory
started. Predictions go through a journal in the run directory, so a run that is killed or
interrupted continues where it stopped when the same command runs again; a fine-tuning run keeps its
trained weights there too, so an interruption during scoring does not retrain. Under
`accelerate launch` each process scores its block of the test items and the main process writes the
record (harness/runs/distributed.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import numpy as np
import torch

from harness.config import Calibration, Scorer, TaskConfig, TaskKind
from harness.engine.backend import Backend, backend_spec
from harness.engine.generation import generate_labels, generate_texts
from harness.engine.hf.backend import HFBackend
from harness.engine.journal import Journal, journal_path, remove_journals
from harness.engine.memory import PeakMemory
from harness.engine.request import ScoringRequest, build_requests
from harness.engine.rolling import score_documents
from harness.engine.scoring import ScoringStats
from harness.errors import HarnessError, RunInterrupted
from harness.files import jsonl_text, sha256_text, write_json, write_text_atomic
from harness.finetune.train import finetune, load_trained, remove_trained
from harness.inputs.data import Example
from harness.inputs.prompts import build_prompt
from harness.kinds.calibration import expected_calibration_error
from harness.kinds.classification import classify
from harness.kinds.multiple_choice import score_choices
from harness.metrics.functions import (
    MUTUAL_INFO,
    NO_LABEL,
    cloze_metrics,
    compute_metrics,
    count_words,
    extracted_answer,
    matching_answer,
    perplexity_metrics,
    standard_error,
)
from harness.runs.distributed import Processes, join_processes
from harness.runs.plan import RunPlan, RunResult, Selection
from harness.runs.records import (
    PREDICTIONS_FILE,
    RECORD_FILE,
    Cost,
    RecordError,
    RunRecord,
    TrainingRecord,
    environment,
)

TRAINING_FILE = "training.json"  # written once the trained weights are saved: training is complete


@dataclass(frozen=True)
class Predicted:
    """What predict() hands on: one prediction (label index, or NO_LABEL) and detail row per test item."""

    requests: list[ScoringRequest]  # per test item, for the demonstrations it saw
    predictions: list[int]
    details: list[dict[str, Any]]  # scores and probabilities, or the generated text
    probabilities: np.ndarray | None  # rank scorers: the label distribution of each item
    uncalibrated: tuple[list[int], np.ndarray] | None  # calibrated runs: predictions and distribution before it
    calibration_scores: list[dict[str, Any]] | None
    stats: ScoringStats
    inference_tokens: int
    resumed: int = 0  # test items an earlier, interrupted process of this run had finished
    # multiple choice: the option chosen per item for each metric (acc, acc_norm, acc_bytes, acc_mutual_info)
    chosen: dict[str, list[int]] | None = None
    loglikelihoods: list[float] | None = None  # cloze: the target's log-likelihood per item
    target_bytes: list[int] | None = None  # cloze: the UTF-8 length of the scored target text per item


@dataclass(frozen=True)
class Measured:
    metrics: dict[str, float]
    stderr: dict[str, float]
    by: dict[str, dict[str, float]] | None  # task.metrics_by
    uncalibrated: dict[str, float] | None  # a calibrated run's metrics before calibration (same scores)


def execute(plan: RunPlan, selection: Selection, started: float, progress: bool = True) -> RunResult:
    processes = join_processes(plan.config.device)
    with PeakMemory() as memory:
        lm, training = prepare_model(plan, selection, processes, progress)
        block = processes.shard(len(selection.examples))
        mine = replace(selection, examples=selection.examples[block], demonstrations=selection.demonstrations[block])
        predicted = predict(plan, mine, lm, processes, progress and processes.main) if mine.examples else None
    parts = processes.gather((predicted, memory.peak_mb(lm.device_name)))
    outcome: RunRecord | str | None = None
    if parts is not None:  # the main process: every block, in item order
        try:
            predicted = _joined([part for part, _ in parts if part is not None])
            measured = measure(plan.config.task, plan.labels, selection.examples, predicted)
            outcome = write_record(plan, selection, lm, training, predicted, measured, started,
                                   max(peak for _, peak in parts), processes.count)
        except HarnessError as error:
            outcome = str(error)
    outcome = processes.from_main(outcome)  # the other processes go on with the same record, or stop alike
    if isinstance(outcome, str):
        raise HarnessError(outcome)
    return RunResult(run_dir=plan.run_dir, record=outcome)


def prepare_model(plan: RunPlan, selection: Selection, processes: Processes,
                  progress: bool) -> tuple[HFBackend, TrainingRecord | None]:
    """Load the model (or take the one an earlier run of this process loaded); for fine-tuning, train it on the
    selection's training set, or apply the weights a previous, interrupted process of this run trained and saved.
    Of several processes only the main one trains; the others wait for its saved weights and load them."""
    config = plan.config
    if not plan.finetuning:
        return backend_spec(config.model.backend).load(config.model, config.device, reuse=True), None
    finished = plan.run_dir / TRAINING_FILE
    if not processes.main:
        processes.wait_for_others()
        lm = backend_spec(config.model.backend).load(config.model, config.device)
        load_trained(lm, config.method.name, plan.run_dir)
        return lm, _finished_training(finished)
    trained = _trained_model(plan, selection, finished, progress)
    processes.wait_for_others()
    return trained


def _trained_model(plan: RunPlan, selection: Selection, finished: Path,
                   progress: bool) -> tuple[HFBackend, TrainingRecord]:
    config = plan.config
    lm = backend_spec(config.model.backend).load(config.model, config.device)  # its own copy: training changes it
    training = None if config.rerun else _finished_training(finished)
    if training is not None:
        load_trained(lm, config.method.name, plan.run_dir)
        print(f"harness: reusing the weights trained by an earlier, interrupted process of this run ({plan.run_dir})",
              file=sys.stderr)
        return lm, training
    finished.unlink(missing_ok=True)
    try:
        training = finetune(lm, config.method, plan.template, selection.training_set,
                            config.seed if config.train_seed is None else config.train_seed, plan.run_dir, progress)
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted during fine-tuning (nothing to keep yet); rerun the same command to "
                             "start it again") from None
    write_json(finished, asdict(training))
    return lm, training


def _finished_training(path: Path) -> TrainingRecord | None:
    """The record an earlier process wrote after saving its trained weights, if it did."""
    try:
        return TrainingRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):  # none, or from another version of the harness: train again
        return None


def predict(plan: RunPlan, selection: Selection, lm: Backend, processes: Processes, progress: bool) -> Predicted:
    """The predictions for the test items of `selection` (this process's block of them)."""
    config = plan.config
    batch_size = None if config.batch_size == "auto" else config.batch_size
    journals: list[Journal] = []
    total = len(selection.examples)
    journal_file = journal_path(plan.run_dir, processes.index, processes.count)

    def open_journal(requests: Sequence[ScoringRequest]) -> Journal:
        header = {"journal": 3, "scorer": str(config.scorer), "requests": _requests_digest(requests)}
        if config.rerun and not journals:
            journal_file.unlink(missing_ok=True)  # rerun=true: from the start
        journals.append(Journal(journal_file, header))
        if journals[-1].resumed_rows:
            print(f"harness: resuming {plan.run_dir.name}: reusing {len(journals[-1].resumed_rows)} of {len(requests)} "
                  "scoring requests finished by an earlier, interrupted process; scoring the rest", file=sys.stderr)
        return journals[-1]

    per_item = len(plan.labels) if config.scorer == Scorer.channel else 1  # channel: a request per label
    if config.task.kind.item_answers and plan.template.continuation is not None:  # partial: one per option
        per_item = max((len(example.choices) for example in selection.examples), default=1)
    predictor = KIND_PREDICTORS.get(config.task.kind) or PREDICTORS[config.scorer]
    try:
        predicted = predictor(plan, selection, lm, batch_size, open_journal, progress)
    except KeyboardInterrupt:
        finished = _items_among(journals[0].results, total, per_item) if journals else 0
        raise RunInterrupted(f"interrupted at {finished}/{total} examples; rerun the same command to continue "
                             f"({journal_file} keeps them)") from None
    finally:
        for journal in journals:
            journal.close()
    return replace(predicted, resumed=_items_among(journals[0].resumed_rows, total, per_item) if journals else 0)


def _items_among(rows: Collection[int], total: int, per_item: int) -> int:
    """Test items whose requests are all among `rows` (requests past total * per_item are calibration prompts)."""
    return sum(1 for row in rows if row < total * per_item) // per_item


Predictor = Callable[..., Predicted]


def _rank_items(plan: RunPlan, selection: Selection, lm: Backend, batch_size: int | None,
                open_journal: Callable[[Sequence[ScoringRequest]], Journal], progress: bool) -> Predicted:
    """scorer=rank and scorer=channel: a log-prob per label, optionally calibrated."""
    config = plan.config
    result = classify(lm, plan.template, config.task.fields, selection.examples, selection.demonstrations, config.scorer,
                      config.calibration, config.content_free_inputs, config.normalize, batch_size,
                      config.prefix_cache, progress, open_journal)
    labels = plan.labels
    details = [{"scores": dict(zip(labels, scores.tolist())), "probabilities": dict(zip(labels, probs.tolist()))}
               for scores, probs in zip(result.scores, result.probabilities)]
    calibrated = config.calibration != Calibration.none
    return Predicted(
        requests=result.requests, predictions=result.predictions, details=details, probabilities=result.probabilities,
        uncalibrated=(result.uncalibrated_predictions, result.uncalibrated_probabilities) if calibrated else None,
        calibration_scores=[{"demo_ids": list(key), "scores": [dict(zip(labels, row)) for row in rows]}
                            for key, rows in result.calibration_scores.items()] if calibrated else None,
        stats=result.stats, inference_tokens=result.inference_tokens,
    )


def _generated_items(plan: RunPlan, selection: Selection, lm: Backend, batch_size: int | None,
                     open_journal: Callable[[Sequence[ScoringRequest]], Journal], progress: bool) -> Predicted:
    """scorer=generate: greedy decoding, the output's first line parsed to a label."""
    config = plan.config
    prompts = [build_prompt(plan.template, demos, example)
               for demos, example in zip(selection.demonstrations, selection.examples)]
    requests = build_requests(prompts, lm, answer_tokens=config.max_new_tokens)
    journal = open_journal(requests)
    generations, stats = generate_labels(lm, requests, list(plan.template.verbalizers.values()),
                                         config.max_new_tokens, batch_size, progress, journal)
    return Predicted(
        requests=requests, predictions=[NO_LABEL if g.label is None else g.label for g in generations],
        details=[{"generation": g.text} for g in generations], probabilities=None, uncalibrated=None,
        calibration_scores=None, stats=stats, inference_tokens=stats.tokens_scored,
    )


def _choice_items(plan: RunPlan, selection: Selection, lm: Backend, batch_size: int | None,
                  open_journal: Callable[[Sequence[ScoringRequest]], Journal], progress: bool) -> Predicted:
    """A multiple-choice task: a log-likelihood per option of each item."""
    config = plan.config
    result = score_choices(lm, plan.template, selection.examples, selection.demonstrations, batch_size, config.prefix_cache,
                           progress, open_journal, mutual_info=MUTUAL_INFO in config.task.metrics)
    details = [{"scores": scores, "chosen": {name: chosen[i] for name, chosen in result.predictions.items()},
                **({} if result.unconditional is None else {"unconditional_scores": result.unconditional[i]})}
               for i, scores in enumerate(result.loglikelihoods)]
    return Predicted(
        requests=result.requests, predictions=result.predictions["acc"], details=details, probabilities=None,
        uncalibrated=None, calibration_scores=None, stats=result.stats, inference_tokens=result.inference_tokens,
        chosen=result.predictions,
    )


def _cloze_items(plan: RunPlan, selection: Selection, lm: Backend, batch_size: int | None,
                 open_journal: Callable[[Sequence[ScoringRequest]], Journal], progress: bool) -> Predicted:
    """A cloze task: the log-likelihood of each item's right continuation, and whether it is the greedy one."""
    config = plan.config
    # only the right continuation is scored (a row may list several): one request with one continuation per item
    targets = [replace(example, choices=(example.choices[example.gold],), gold=0) for example in selection.examples]
    result = score_choices(lm, plan.template, targets, selection.demonstrations, batch_size, config.prefix_cache,
                           progress, open_journal)
    golds = [example.gold for example in selection.examples]
    loglikelihoods = [scores[0] for scores in result.loglikelihoods]
    greedy = [flags[0] for flags in result.greedy]
    predictions = [gold if is_greedy else NO_LABEL for gold, is_greedy in zip(golds, greedy)]
    return Predicted(
        requests=result.requests, predictions=predictions,
        details=[{"target": example.choices[example.gold], "loglikelihood": value, "greedy": is_greedy}
                 for example, value, is_greedy in zip(selection.examples, loglikelihoods, greedy)],
        probabilities=None, uncalibrated=None, calibration_scores=None, stats=result.stats,
        inference_tokens=result.inference_tokens, chosen={"acc": predictions}, loglikelihoods=loglikelihoods,
        target_bytes=[len(texts[0].encode("utf-8")) for texts in result.continuations],
    )


def _answer_items(plan: RunPlan, selection: Selection, lm: Backend, batch_size: int | None,
                  open_journal: Callable[[Sequence[ScoringRequest]], Journal], progress: bool) -> Predicted:
    """A short-answer task: a greedy answer per item, right when it matches one of the item's accepted answers."""
    spec = plan.config.task.answer
    prompts = [build_prompt(plan.template, demos, example)
               for demos, example in zip(selection.demonstrations, selection.examples)]
    requests = build_requests(prompts, lm, answer_tokens=spec.max_new_tokens)
    texts, stats = generate_texts(lm, requests, spec.max_new_tokens, spec.until, batch_size, progress,
                                  open_journal(requests))
    # lm-evaluation-harness 0.4.13's remove_whitespace filter strips both ends (before 0.4.10 or so: the start only)
    answers = [text.strip() for text in texts]
    # each named filter reads the generation as it came (GSM8K's regexes), the plain match its stripped text
    extracted = {name: [extracted_answer(text, rule) for text in texts] for name, rule in spec.filters.items()}

    def matched(candidates: Sequence[str]) -> list[int | None]:
        return [matching_answer(answer, example.choices, spec) for answer, example in zip(candidates, selection.examples)]

    def right(found: Sequence[int | None]) -> list[int]:
        return [NO_LABEL if match is None else example.gold for match, example in zip(found, selection.examples)]

    matches = matched(answers)
    chosen = {"exact_match": right(matches), **{f"exact_match_{name}": right(matched(values))
                                                for name, values in extracted.items()}}
    return Predicted(
        requests=requests, predictions=chosen["exact_match"],
        details=[{"generation": answer, "matched": None if match is None else example.choices[match],
                  **({"extracted": {name: values[i] for name, values in extracted.items()},
                      "right": {metric: chosen[metric][i] != NO_LABEL for metric in chosen}} if extracted else {})}
                 for i, (answer, match, example) in enumerate(zip(answers, matches, selection.examples))],
        probabilities=None, uncalibrated=None, calibration_scores=None, stats=stats,
        inference_tokens=stats.tokens_scored, chosen=chosen,
    )


def _document_items(plan: RunPlan, selection: Selection, lm: Backend, batch_size: int | None,
                    open_journal: Callable[[Sequence[ScoringRequest]], Journal], progress: bool) -> Predicted:
    """A perplexity task: each text's rolling log-likelihood, with the words and bytes it is counted over."""
    texts = [plan.template.render(example, "") for example in selection.examples]
    field = plan.config.task.units_field
    counted = texts if field is None else [str(example.fields[field]) for example in selection.examples]
    result = score_documents(lm, texts, batch_size, progress, open_journal)
    first_windows = list(itertools.accumulate([0, *result.windows[:-1]]))
    return Predicted(
        requests=[result.requests[i] if count else _NO_WINDOW for i, count in zip(first_windows, result.windows)],
        predictions=[NO_LABEL] * len(texts),
        details=[{"loglikelihood": value, "tokens": tokens, "windows": windows, "words": count_words(text),
                  "bytes": len(text.encode("utf-8"))}
                 for value, tokens, windows, text in zip(result.loglikelihoods, result.tokens, result.windows, counted)],
        probabilities=None, uncalibrated=None, calibration_scores=None, stats=result.stats,
        inference_tokens=sum(result.tokens), loglikelihoods=result.loglikelihoods,
        target_bytes=[len(text.encode("utf-8")) for text in counted],
    )


_NO_WINDOW = ScoringRequest(context_ids=(), continuation_ids=(), demo_ids=(), dropped_demos=0)  # an empty text


PREDICTORS: dict[Scorer, Predictor] = {Scorer.rank: _rank_items, Scorer.channel: _rank_items,
                                       Scorer.generate: _generated_items}
KIND_PREDICTORS: dict[TaskKind, Predictor] = {TaskKind.choice: _choice_items, TaskKind.cloze: _cloze_items,
                                              TaskKind.generate: _answer_items, TaskKind.perplexity: _document_items}


def measure(task: TaskConfig, labels: Sequence[str], examples: Sequence[Example], predicted: Predicted) -> Measured:
    """The task's metrics with their standard errors (and the ECE of a label distribution), per value of
    task.metrics_by with their macro average, and a calibrated run's metrics before calibration."""
    if task.kind == TaskKind.perplexity:  # ratios of sums over the whole corpus
        return Measured(perplexity_metrics(task.metrics, predicted.loglikelihoods,
                                           [detail["words"] for detail in predicted.details],
                                           predicted.target_bytes), {}, None, None)
    if task.kind.item_answers:
        references = [example.gold for example in examples]
        chosen = {name: predicted.chosen.get(name, predicted.predictions) for name in task.metrics}
    else:
        references = [labels.index(example.label) for example in examples]
        chosen = {name: predicted.predictions for name in task.metrics}

    def metrics_of(rows: Sequence[int]) -> tuple[dict[str, float], dict[str, float]]:
        if task.kind == TaskKind.cloze:
            return cloze_metrics(task.metrics, [predicted.predictions[i] != NO_LABEL for i in rows],
                                 [predicted.loglikelihoods[i] for i in rows], [predicted.target_bytes[i] for i in rows])
        return _metrics(task.metrics, {name: [chosen[name][i] for i in rows] for name in chosen},
                        [references[i] for i in rows])

    metrics, stderr = metrics_of(range(len(examples)))
    by = None
    if task.metrics_by is not None:
        values = [str(example.fields[task.metrics_by]) for example in examples]
        by = {}
        for value in sorted(set(values)):
            group, _ = metrics_of([i for i, v in enumerate(values) if v == value])
            by[value] = {**group, "n": values.count(value)}
        for name in task.metrics:  # each value counts once, whatever its size (lm-evaluation-harness's "macro")
            metrics[f"{name}_macro"] = float(np.mean([group[name] for group in by.values()]))
    if predicted.probabilities is None:
        if task.kind == TaskKind.classify:
            metrics["no_label_rate"] = predicted.predictions.count(NO_LABEL) / len(references)
        return Measured(metrics, stderr, by, None)
    metrics["ece"] = expected_calibration_error(predicted.probabilities, references)
    if predicted.uncalibrated is None:
        return Measured(metrics, stderr, by, None)
    predictions, probabilities = predicted.uncalibrated
    uncalibrated = compute_metrics(task.metrics, predictions, references)
    uncalibrated["ece"] = expected_calibration_error(probabilities, references)
    return Measured(metrics, stderr, by, uncalibrated)


def _metrics(names: Sequence[str], chosen: dict[str, list[int]], references: list[int]) -> tuple[dict, dict]:
    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for name in names:
        metrics.update(compute_metrics([name], chosen[name], references))
        error = standard_error(name, chosen[name], references)
        if error is not None:
            stderr[name] = error
    return metrics, stderr


def _joined(parts: Sequence[Predicted]) -> Predicted:
    """The predictions of consecutive blocks of test items as one (a data-parallel run's processes, in order).
    Token counts add up; the scoring time is the slowest block's, as the processes score at the same time."""
    if len(parts) == 1:
        return parts[0]

    def joined_lists(name: str) -> list | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else [item for value in values for item in value]

    first = parts[0]
    calibration: dict[tuple, dict[str, Any]] = {}  # the same demonstrations' prompts are scored in every block
    for part in parts:
        for entry in part.calibration_scores or ():
            calibration.setdefault(tuple(entry["demo_ids"]), entry)
    return Predicted(
        requests=joined_lists("requests"), predictions=joined_lists("predictions"), details=joined_lists("details"),
        probabilities=None if first.probabilities is None else np.concatenate([part.probabilities for part in parts]),
        uncalibrated=None if first.uncalibrated is None else (
            [item for part in parts for item in part.uncalibrated[0]],
            np.concatenate([part.uncalibrated[1] for part in parts])),
        calibration_scores=None if first.calibration_scores is None else list(calibration.values()),
        stats=ScoringStats(tokens_scored=sum(part.stats.tokens_scored for part in parts),
                           tokens_forwarded=sum(part.stats.tokens_forwarded for part in parts),
                           seconds=max(part.stats.seconds for part in parts)),
        inference_tokens=sum(part.inference_tokens for part in parts),
        resumed=sum(part.resumed for part in parts),
        chosen=None if first.chosen is None else {name: [item for part in parts for item in part.chosen[name]]
                                                  for name in first.chosen},
        loglikelihoods=joined_lists("loglikelihoods"),
        target_bytes=joined_lists("target_bytes"),
    )


def write_record(plan: RunPlan, selection: Selection, lm: Backend, training: TrainingRecord | None,
                 predicted: Predicted, measured: Measured, started: float, peak_memory_mb: float,
                 processes: int = 1) -> RunRecord:
    """predictions.jsonl, then metrics.json (last: its presence marks a complete run); then the journal goes."""
    config, labels = plan.config, plan.labels
    choice = config.task.kind.item_answers
    rows = (
        {
            "id": example.id,
            "gold": example.label,
            "prediction": None if prediction == NO_LABEL else str(prediction) if choice else labels[prediction],
            **detail,
            "demo_ids": list(request.demo_ids),
            "dropped_demos": request.dropped_demos,
        }
        for example, prediction, detail, request in zip(selection.examples, predicted.predictions, predicted.details,
                                                        predicted.requests)
    )
    try:
        predictions_text = jsonl_text(rows)
    except ValueError:
        raise HarnessError("a prediction holds a non-finite number; not writing the record") from None
    stats, demonstrations = predicted.stats, selection.demonstrations
    record = RunRecord(
        task=config.task.name, model=config.model.name, method=str(config.method.name), template=plan.template.name,
        shots=config.shots, seed=config.seed, scorer=str(config.scorer), calibration=str(config.calibration),
        demos=str(config.demos), run_key=plan.key, inputs=plan.inputs, n=len(selection.examples),
        metrics=measured.metrics, stderr=measured.stderr, by=measured.by, uncalibrated=measured.uncalibrated,
        demo_ids=[demo.id for demo in demonstrations[0]] if demonstrations and all(
            d is demonstrations[0] for d in demonstrations) else None,
        train_ids=[demo.id for demo in selection.training_set],
        examples_with_dropped_demos=sum(1 for request in predicted.requests if request.dropped_demos),
        predictions_sha256=sha256_text(predictions_text),
        cost=Cost(
            wall_time_s=round(time.perf_counter() - started, 3),
            scoring_time_s=round(stats.seconds, 3),
            tokens_scored=stats.tokens_scored,
            tokens_forwarded=stats.tokens_forwarded,
            tokens_scored_per_s=round(stats.tokens_scored / stats.seconds, 1) if stats.seconds else None,
            # what each test query costs at inference: ICL pays for its demonstrations every time
            inference_tokens_per_example=round(predicted.inference_tokens / len(selection.examples), 1),
            examples_resumed=predicted.resumed,
            peak_memory_mb=peak_memory_mb,
        ),
        training=training,
        calibration_scores=predicted.calibration_scores,
        environment=environment(lm.device_name, lm.dtype_name, torch.get_num_threads(),
                                processes),
    )
    try:
        record_text = record.to_json()
    except RecordError as error:
        raise HarnessError(str(error)) from None
    try:
        write_text_atomic(plan.run_dir / PREDICTIONS_FILE, predictions_text)
        write_text_atomic(plan.run_dir / RECORD_FILE, record_text)
    except OSError as error:
        others = " and the other processes' journals beside it" if processes > 1 else ""
        raise HarnessError(f"cannot write the run record to {plan.run_dir} ({error.strerror or error}); the scores "
                           f"are kept in {journal_path(plan.run_dir, 0, processes)}{others}: free space and rerun "
                           "the same command") from None
    remove_journals(plan.run_dir)
    if plan.finetuning and not config.method.save_weights:
        remove_trained(plan.run_dir)
    return record


def _requests_digest(requests: Sequence[ScoringRequest]) -> str:
    digest = hashlib.sha256()
    for request in requests:
        digest.update(json.dumps([request.context_ids, request.continuation_ids, request.demo_ids]).encode())
    return digest.hexdigest()
