"""One run, end to end: task -> examples -> prompts -> requests -> scores -> metrics -> record."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from harness.config import RunConfig
from harness.data import load_split
from harness.demos import select_demonstrations
from harness.errors import HarnessError
from harness.finetune import METHODS as FINETUNING_METHODS
from harness.finetune import finetune
from harness.generation import generate_labels
from harness.metrics import NO_LABEL, compute_metrics
from harness.models import load_language_model
from harness.prompts import build_prompt, load_template
from harness.records import config_hash, environment, run_dir_name, write_json, write_jsonl, write_text_atomic
from harness.requests import build_requests
from harness.scoring import LabelScores, score_requests

METHODS = ("icl", *FINETUNING_METHODS)
NORMALIZATIONS = ("sum", "mean")
SCORERS = ("rank", "generate")
SUBSAMPLE_SEED = 0  # independent of the run seed, so every run scores the same test items


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    reused: bool = False  # the record was complete already, nothing ran


def predict(scores: LabelScores, normalize: str) -> int:
    """Index of the best label: highest summed log-prob, or per-token mean with normalize=mean."""
    values = scores.logprobs
    if normalize == "mean":
        values = tuple(value / count for value, count in zip(values, scores.token_counts))
    return max(range(len(values)), key=values.__getitem__)  # ties go to the first label


def run(config: RunConfig, progress: bool = True) -> RunResult:
    started = time.perf_counter()
    _check(config)
    resolved = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    run_dir = Path(config.output_dir) / run_dir_name(resolved)
    if (run_dir / "metrics.json").exists() and not config.rerun:  # complete: an interrupted sweep resumes
        return RunResult(run_dir=run_dir, metrics=json.loads((run_dir / "metrics.json").read_text()), reused=True)
    task = config.task
    template = load_template(task, config.template or task.default_template)
    labels = list(task.labels)
    examples = load_split(task, task.eval_split)
    if config.subsample is not None and config.subsample < len(examples):
        chosen = np.random.default_rng(SUBSAMPLE_SEED).choice(len(examples), size=config.subsample, replace=False)
        examples = [examples[i] for i in sorted(chosen)]
    if config.limit is not None:
        examples = examples[: config.limit]
    pool = load_split(task, task.demo_split) if config.shots else []
    # ICL shows these k examples; fine-tuning trains on exactly the same ones.
    demonstrations = select_demonstrations(pool, config.shots, config.seed, config.demos, labels)
    in_prompt = demonstrations if config.method.name == "icl" else demonstrations[: config.eval_shots]
    prompts = [build_prompt(template, in_prompt, example) for example in examples]

    lm = load_language_model(config.model, config.device)
    training = None
    if config.method.name != "icl":
        training = finetune(lm, config.method, template, demonstrations, config.seed, run_dir, progress)
    batch_size = None if config.batch_size == "auto" else config.batch_size
    if config.scorer == "rank":
        requests = build_requests(prompts, lm)
        scores, stats = score_requests(lm, requests, batch_size, config.prefix_cache, progress)
        predictions = [predict(score, config.normalize) for score in scores]
        details = [{"scores": dict(zip(labels, s.logprobs)), "label_tokens": dict(zip(labels, s.token_counts))}
                   for s in scores]
        # one pass over the context, then every label's tokens: what scoring a query needs at the least
        inference_tokens = sum(len(r.context_ids) + sum(map(len, r.continuation_ids)) for r in requests)
    else:
        requests = build_requests(prompts, lm, answer_tokens=config.max_new_tokens)
        verbalizers = list(template.verbalizers.values())
        generations, stats = generate_labels(lm, requests, verbalizers, config.max_new_tokens, batch_size, progress)
        predictions = [NO_LABEL if g.label is None else g.label for g in generations]
        details = [{"generation": g.text} for g in generations]
        inference_tokens = stats.tokens_scored  # contexts + generated tokens
    references = [labels.index(example.label) for example in examples]
    metrics = compute_metrics(task.metrics, predictions, references)

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
        "config_hash": config_hash(resolved),
        **metrics,
        "n": len(examples),
        **({"no_label_rate": predictions.count(NO_LABEL) / len(examples)} if config.scorer == "generate" else {}),
        "demo_ids": [demo.id for demo in in_prompt],
        "train_ids": [demo.id for demo in demonstrations] if training else [],
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


def _check(config: RunConfig) -> None:
    if config.method.name not in METHODS:
        raise HarnessError(f"method '{config.method.name}' is not available (methods: {', '.join(METHODS)})")
    if config.eval_shots and config.method.name == "icl":
        raise HarnessError("eval_shots applies to fine-tuning methods; for icl use shots")
    if not 0 <= config.eval_shots <= config.shots:
        raise HarnessError(f"eval_shots must be between 0 and shots ({config.shots}), got {config.eval_shots}")
    if config.scorer not in SCORERS:
        raise HarnessError(f"unknown scorer '{config.scorer}' (choose from: {', '.join(SCORERS)})")
    if config.max_new_tokens < 1:
        raise HarnessError(f"max_new_tokens must be >= 1, got {config.max_new_tokens}")
    if config.normalize not in NORMALIZATIONS:
        raise HarnessError(f"unknown normalize '{config.normalize}' (choose from: {', '.join(NORMALIZATIONS)})")
    if config.batch_size != "auto" and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise HarnessError(f"batch_size must be a positive integer or auto, got {config.batch_size!r}")
    for key in ("limit", "subsample"):
        if getattr(config, key) is not None and getattr(config, key) < 1:
            raise HarnessError(f"{key} must be >= 1, got {getattr(config, key)}")
