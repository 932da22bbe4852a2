"""One run, end to end: task -> examples -> prompts -> requests -> scores -> metrics -> record."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from harness.calibration import CALIBRATIONS, expected_calibration_error
from harness.classify import classify
from harness.config import RunConfig
from harness.data import load_split
from harness.demos import demonstrations_per_example
from harness.errors import HarnessError
from harness.finetune import METHODS as FINETUNING_METHODS
from harness.finetune import finetune
from harness.generation import generate_labels
from harness.metrics import NO_LABEL, compute_metrics
from harness.models import load_language_model
from harness.prompts import build_prompt, is_channel, load_template
from harness.registry import template_files
from harness.records import config_hash, environment, run_dir_name, write_json, write_jsonl, write_text_atomic
from harness.requests import build_requests
from harness.retrieval import RETRIEVERS

METHODS = ("icl", *FINETUNING_METHODS)
NORMALIZATIONS = ("sum", "mean")
SCORERS = ("rank", "channel", "generate")
SUBSAMPLE_SEED = 0  # independent of the run seed, so every run scores the same test items


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    reused: bool = False  # the record was complete already, nothing ran


def run(config: RunConfig, progress: bool = True) -> RunResult:
    started = time.perf_counter()
    _check(config)
    resolved = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    run_dir = Path(config.output_dir) / run_dir_name(resolved)
    if (run_dir / "metrics.json").exists() and not config.rerun:  # complete: an interrupted sweep resumes
        return RunResult(run_dir=run_dir, metrics=json.loads((run_dir / "metrics.json").read_text()), reused=True)
    task = config.task
    template = load_template(task, config.template or task.default_template)
    if is_channel(template, task.fields) and config.scorer != "channel":
        raise HarnessError(f"template '{template.name}' puts the answer before the input (a channel template): "
                           "use scorer=channel")
    if config.scorer == "channel" and not is_channel(template, task.fields):
        raise HarnessError(f"scorer=channel needs a template that puts {{{{ answer }}}} before the input "
                           f"(a channel_* template), not '{template.name}'")
    labels = list(task.labels)
    examples = load_split(task, task.eval_split)
    if config.subsample is not None and config.subsample < len(examples):
        chosen = np.random.default_rng(SUBSAMPLE_SEED).choice(len(examples), size=config.subsample, replace=False)
        examples = [examples[i] for i in sorted(chosen)]
    if config.limit is not None:
        examples = examples[: config.limit]
    pool = load_split(task, task.demo_split) if config.shots else []
    # Each test example's demonstrations. ICL shows them; fine-tuning trains on the run's one set
    # (the very examples the ICL run with this seed shows) and shows its first eval_shots.
    per_example = demonstrations_per_example(examples, pool, config.shots, config.seed, config.demos, labels,
                                             config.demo_ids, config.demo_order, config.retriever)
    training_set = per_example[0] if config.method.name != "icl" else []
    shown = per_example if config.method.name == "icl" else [training_set[: config.eval_shots]] * len(examples)

    lm = load_language_model(config.model, config.device)
    training = None
    if config.method.name != "icl":
        training = finetune(lm, config.method, template, training_set, config.seed, run_dir, progress)
    batch_size = None if config.batch_size == "auto" else config.batch_size
    references = [labels.index(example.label) for example in examples]
    extra: dict[str, Any] = {}
    if config.scorer == "generate":
        prompts = [build_prompt(template, demos, example) for demos, example in zip(shown, examples)]
        requests = build_requests(prompts, lm, answer_tokens=config.max_new_tokens)
        verbalizers = list(template.verbalizers.values())
        generations, stats = generate_labels(lm, requests, verbalizers, config.max_new_tokens, batch_size, progress)
        predictions = [NO_LABEL if g.label is None else g.label for g in generations]
        details = [{"generation": g.text} for g in generations]
        inference_tokens = stats.tokens_scored  # contexts + generated tokens
        metrics = compute_metrics(task.metrics, predictions, references)
        extra["no_label_rate"] = predictions.count(NO_LABEL) / len(examples)
    else:
        result = classify(lm, template, task.fields, examples, shown, config.scorer, config.calibration,
                          config.content_free_inputs, config.normalize, batch_size, config.prefix_cache, progress)
        requests, stats, predictions = result.requests, result.stats, result.predictions
        details = [{"scores": dict(zip(labels, scores.tolist())), "probabilities": dict(zip(labels, probs.tolist()))}
                   for scores, probs in zip(result.scores, result.probabilities)]
        inference_tokens = result.inference_tokens
        metrics = compute_metrics(task.metrics, predictions, references)
        metrics["ece"] = expected_calibration_error(result.probabilities, references)
        if config.calibration != "none":  # the same run without calibration, for the side-by-side table
            uncalibrated = compute_metrics(task.metrics, result.uncalibrated_predictions, references)
            uncalibrated["ece"] = expected_calibration_error(result.uncalibrated_probabilities, references)
            extra["uncalibrated"] = uncalibrated
            extra["calibration_scores"] = [
                {"demo_ids": list(key), "scores": [dict(zip(labels, row)) for row in rows]}
                for key, rows in result.calibration_scores.items()
            ]

    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(resolved))
    write_jsonl(
        run_dir / "predictions.jsonl",
        (
            {
                "id": example.id,
                "gold": example.label,
                "prediction": None if prediction == NO_LABEL else labels[prediction],
                **detail,
                "demo_ids": list(request.demo_ids),
                "dropped_demos": request.dropped_demos,
            }
            for example, prediction, detail, request in zip(examples, predictions, details, requests)
        ),
    )
    record = {
        "task": task.name,
        "model": config.model.name,
        "method": config.method.name,
        "template": template.name,
        "shots": config.shots,
        "seed": config.seed,
        "scorer": config.scorer,
        "calibration": config.calibration,
        "demos": config.demos,
        "config_hash": config_hash(resolved),
        **metrics,
        "n": len(examples),
        **extra,
        # the run's one demonstration set; null when each example has its own (see predictions.jsonl)
        "demo_ids": [demo.id for demo in shown[0]] if shown and all(d is shown[0] for d in shown) else None,
        "train_ids": [demo.id for demo in training_set],
        "examples_with_dropped_demos": sum(1 for request in requests if request.dropped_demos),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "scoring_time_s": round(stats.seconds, 3),
        "tokens_scored": stats.tokens_scored,
        "tokens_forwarded": stats.tokens_forwarded,
        "tokens_scored_per_s": round(stats.tokens_scored / stats.seconds, 1) if stats.seconds else None,
        # what each test query costs at inference: ICL pays for its demonstrations every time
        "inference_tokens_per_example": round(inference_tokens / len(examples), 1),
        "training": asdict(training) if training else None,
        "device": str(lm.device),
        "dtype": str(lm.model.dtype).removeprefix("torch."),
        **environment(),
    }
    write_json(run_dir / "metrics.json", record)  # last: its presence marks a complete run
    return RunResult(run_dir=run_dir, metrics=record)


def templates_to_run(config: RunConfig) -> list[str]:
    """template=all: every template of the task that suits the scorer (channel templates for scorer=channel)."""
    if config.template != "all":
        return [config.template or config.task.default_template]
    names = [name for name in template_files(config.task.name)
             if is_channel(load_template(config.task, name), config.task.fields) == (config.scorer == "channel")]
    if not names:
        raise HarnessError(f"task '{config.task.name}' has no templates for scorer={config.scorer}")
    return names


def _check(config: RunConfig) -> None:
    if config.method.name not in METHODS:
        raise HarnessError(f"method '{config.method.name}' is not available (methods: {', '.join(METHODS)})")
    if config.eval_shots and config.method.name == "icl":
        raise HarnessError("eval_shots applies to fine-tuning methods; for icl use shots")
    if not 0 <= config.eval_shots <= config.shots:
        raise HarnessError(f"eval_shots must be between 0 and shots ({config.shots}), got {config.eval_shots}")
    if config.scorer not in SCORERS:
        raise HarnessError(f"unknown scorer '{config.scorer}' (choose from: {', '.join(SCORERS)})")
    if config.calibration not in CALIBRATIONS:
        raise HarnessError(f"unknown calibration '{config.calibration}' (choose from: {', '.join(CALIBRATIONS)})")
    if config.calibration != "none" and config.scorer != "rank":
        raise HarnessError(f"calibration={config.calibration} applies to scorer=rank, not scorer={config.scorer}")
    if config.demos in RETRIEVERS and config.method.name != "icl":
        raise HarnessError(f"demos={config.demos} picks demonstrations per test example; "
                           "fine-tuning needs one training set (demos=random, balanced, first_n or ids)")
    if config.max_new_tokens < 1:
        raise HarnessError(f"max_new_tokens must be >= 1, got {config.max_new_tokens}")
    if config.normalize not in NORMALIZATIONS:
        raise HarnessError(f"unknown normalize '{config.normalize}' (choose from: {', '.join(NORMALIZATIONS)})")
    if config.batch_size != "auto" and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise HarnessError(f"batch_size must be a positive integer or auto, got {config.batch_size!r}")
    for key in ("limit", "subsample"):
        if getattr(config, key) is not None and getattr(config, key) < 1:
            raise HarnessError(f"{key} must be >= 1, got {getattr(config, key)}")
