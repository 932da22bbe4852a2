"""The stages of a run that need the model: prepare it, predict, measure, record.

harness/runs/run.py calls execute() once the plan is made, the inputs chosen and the run directory
started. The task's kind (harness/kinds/) turns the test items into predictions through the backend and
measures them. Predictions go through a journal in the run directory, so a run that is killed or
interrupted continues where it stopped when the same command runs again; a fine-tuning run keeps its
trained weights there too, so an interruption during scoring does not retrain. Under
`accelerate launch` each process scores its block of the test items and the main process writes the
record (harness/runs/distributed.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
import torch

from harness.engine.backend import Backend, backend_spec
from harness.engine.hf.backend import HFBackend
from harness.engine.journal import Journal, journal_path, remove_journals
from harness.engine.memory import PeakMemory
from harness.engine.request import ScoringRequest
from harness.engine.scoring import ScoringStats
from harness.errors import HarnessError, RunInterrupted
from harness.files import jsonl_text, sha256_text, write_json, write_text_atomic
from harness.finetune.method import MERGED_DIR
from harness.finetune.train import finetune, load_trained, remove_trained
from harness.kinds.base import Items, Measured, Predicted, task_kind
from harness.runs.distributed import Processes, is_main_process, join_processes
from harness.runs.plan import RunPlan, RunResult, Selection, check_chat_template
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
            measured = task_kind(plan.config.task.kind).measure(plan.config.task, plan.labels, selection.examples,
                                                                predicted)
            outcome = write_record(plan, selection, lm, training, predicted, measured, started,
                                   max(peak for _, peak in parts), processes.count)
        except HarnessError as error:
            outcome = str(error)
    outcome = processes.from_main(outcome)  # the other processes go on with the same record, or stop alike
    if isinstance(outcome, str):
        raise HarnessError(outcome)
    return RunResult(run_dir=plan.run_dir, record=outcome)


def prepare_model(plan: RunPlan, selection: Selection, processes: Processes,
                  progress: bool) -> tuple[Backend, TrainingRecord | None]:
    """Load the model (or take the one an earlier run of this process loaded); for fine-tuning, train it on the
    selection's training set, or apply the weights a previous, interrupted process of this run trained and saved.
    Of several processes only the main one trains; the others wait for its saved weights and load them."""
    config = plan.config
    if not plan.finetuning:
        return _loaded(plan, reuse=True), None
    finished = plan.run_dir / TRAINING_FILE
    if not backend_spec(config.model.backend).trainable:  # planning allowed it: the backend serves trained weights
        return _served_trained_model(plan, selection, finished, progress)
    if not processes.main:
        processes.wait_for_others()
        lm = _loaded(plan)
        load_trained(lm, config.method.name, plan.run_dir)
        return lm, _finished_training(finished)
    trained = _trained_model(plan, selection, finished, progress)
    processes.wait_for_others()
    return trained


def _loaded(plan: RunPlan, reuse: bool = False) -> Backend:
    """The run's model, its chat template checked against the run's (where planning could not read the tokenizer's
    files), and a note when it has one that the run does not use: nobody compares the two formats by accident."""
    config = plan.config
    lm = backend_spec(config.model.backend).load(config.model, config.device, reuse=reuse)
    names = lm.chat_template_names()
    chat = plan.template.chat
    if chat is not None:
        check_chat_template(config.model, names or [], chat.template_name)
    elif names and is_main_process():
        print(f"harness: note: {config.model.name} has a chat template ({', '.join(names)}); this run renders plain "
              "prompts (chat_template=true renders them through it)", file=sys.stderr)
    return lm


def _trained_model(plan: RunPlan, selection: Selection, finished: Path,
                   progress: bool) -> tuple[Backend, TrainingRecord]:
    config = plan.config
    lm = _loaded(plan)  # its own copy: training changes it
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


def _served_trained_model(plan: RunPlan, selection: Selection, finished: Path,
                          progress: bool) -> tuple[Backend, TrainingRecord]:
    """Fine-tuning scored by a backend that cannot train (vLLM): transformers trains on the same examples as with
    model.backend=hf (or applies what an interrupted run saved), the trained model is written as whole weights
    (adapters merged) beside the run, and the run's backend loads those. Removed once the record is written."""
    config = plan.config
    trainer = replace(plan, config=replace(config, model=replace(config.model, backend="hf")))
    lm, training = _trained_model(trainer, selection, finished, progress)
    assert isinstance(lm, HFBackend)
    merged = plan.run_dir / MERGED_DIR
    print(f"harness: writing the trained model to {merged} for model.backend={config.model.backend}", file=sys.stderr)
    lm.model.save_pretrained(merged)
    lm.tokenizer.save_pretrained(merged)
    del lm  # its memory goes before the serving backend loads the copy
    served = replace(config.model, path=str(merged), gguf_asset=None)
    return _loaded(replace(plan, config=replace(config, model=served))), training


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
        # 5: batch_size=auto forms batches by a token budget (harness/engine/scoring.py); 4: by the widest row a
        # request makes. A journal of other batches is not resumed, so a resumed record equals an uninterrupted one byte for
        # byte
        header = {"journal": 5, "scorer": str(config.scorer), "requests": _requests_digest(requests)}
        if config.rerun and not journals:
            journal_file.unlink(missing_ok=True)  # rerun=true: from the start
        journals.append(Journal(journal_file, header))
        if journals[-1].resumed_rows:
            print(f"harness: resuming {plan.run_dir.name}: reusing {len(journals[-1].resumed_rows)} of {len(requests)} "
                  "scoring requests finished by an earlier, interrupted process; scoring the rest", file=sys.stderr)
        return journals[-1]

    kind = task_kind(config.task.kind)
    items = Items(config=config, template=plan.template, labels=plan.labels, examples=selection.examples,
                  demonstrations=selection.demonstrations, backend=lm, batch_size=batch_size,
                  batch_tokens=config.batch_tokens,
                  open_journal=open_journal, progress=progress)
    per_item = kind.requests_per_item(items)
    try:
        predicted = kind.predict(items)
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
    kind = task_kind(config.task.kind)
    rows = (
        {
            "id": example.id,
            "gold": example.label,
            "prediction": kind.prediction_text(prediction, labels),
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
                                processes, lm.engine_versions, lm.chat_template_names()),
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
    shutil.rmtree(plan.run_dir / MERGED_DIR, ignore_errors=True)  # a copy of the trained weights, for a serving backend
    if plan.finetuning and not config.method.save_weights:
        remove_trained(plan.run_dir)
    return record


def _requests_digest(requests: Sequence[ScoringRequest]) -> str:
    digest = hashlib.sha256()
    for request in requests:
        digest.update(json.dumps([request.context_ids, request.continuation_ids, request.demo_ids]).encode())
    return digest.hexdigest()
