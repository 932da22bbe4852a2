"""Light fine-tuning on the k examples an ICL run would show, under the same prompt.

Training is prompt-based (LM-BFF style): each example is rendered with the run's template,
exactly as a zero-shot query, and the loss is the cross-entropy of its gold verbalizer tokens
after the prompt. The tuned model is then scored by the same rank classification as ICL.

Each method (harness/finetune/<method>.py, registered in harness/finetune/method.py) says how the model trains
and how it goes back to scoring form: LoRA and IA3 adapters are merged into the weights, prompt tuning leaves a
soft prompt on the backend, so the one scorer serves every method.

Training FLOPs are estimated as (4 N + 2 N_trainable) per token seen: forward 2N, the backward
pass through activations 2N, and weight gradients 2 per trainable parameter (6N for full
tuning), with N the parameters that take part in matmuls (all parameters, tied ones once).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from harness.config import MethodConfig
from harness.engine.hf.backend import HFBackend
from harness.engine.memory import memory_in_use_mb
from harness.engine.request import scored_texts
from harness.errors import HarnessError
from harness.finetune.method import ADAPTER_DIR, WEIGHTS_FILE, TrainingRecord, learning_method
from harness.inputs.data import Example
from harness.inputs.prompts import Template, gold_sequence


def finetune(
    lm: HFBackend, method: MethodConfig, template: Template, examples: Sequence[Example], seed: int,
    save_dir: Path | None, progress: bool = True,
) -> TrainingRecord:
    """Train `lm` in place on `examples`; afterwards `lm` scores like the tuned model, and what changed is saved
    in `save_dir` (load_trained applies it to a freshly loaded model, with the same numbers)."""
    if not examples:
        raise HarnessError(f"method={method.name} needs training examples: set shots > 0")
    if method.steps < 1 or method.learning_rate <= 0:
        raise HarnessError(f"method={method.name} needs method.steps >= 1 and method.learning_rate > 0")
    torch.manual_seed(seed)
    sequences = _training_sequences(lm, template, examples)
    total = _parameter_count(lm.model)
    model, finish = learning_method(method.name).prepare(lm, method)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=method.learning_rate, weight_decay=method.weight_decay)
    schedule = _linear_schedule(optimizer, round(method.warmup_ratio * method.steps), method.steps)
    batches = _batch_order(len(sequences), min(method.batch_size, len(sequences)), method.steps, seed)
    losses, tokens_seen, peak_memory = [], 0, 0.0
    start = time.perf_counter()
    model.train()
    with tqdm(batches, desc=f"training {method.name}", unit="step", disable=not progress, dynamic_ncols=True) as bar:
        for indices in bar:
            input_ids, attention_mask, labels = _collate([sequences[i] for i in indices], lm)
            loss = model(input_ids=input_ids.to(lm.device), attention_mask=attention_mask.to(lm.device),
                         labels=labels.to(lm.device)).loss
            peak_memory = max(peak_memory, memory_in_use_mb(lm.device))  # activations are alive here
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, method.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise HarnessError(f"method={method.name}: the training loss became {losses[-1]} at step {len(losses)} "
                                   "(try a lower method.learning_rate); nothing was recorded")
            tokens_seen += int(attention_mask.sum())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    train_time = time.perf_counter() - start
    model.eval()
    finish(save_dir)
    return TrainingRecord(
        trainable_parameters=trainable_count,
        total_parameters=total,
        steps=len(losses),
        examples_seen=sum(map(len, batches)),
        tokens_seen=tokens_seen,
        train_time_s=round(train_time, 3),
        peak_memory_mb=round(max(peak_memory, memory_in_use_mb(lm.device)), 1),
        train_flops=float((4 * total + 2 * trainable_count) * tokens_seen),
        losses=[round(loss, 6) for loss in losses],
    )


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the learning rate over `warmup` steps, then linear decay to 0 at `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / (warmup + 1) if step < warmup else (steps - step) / max(1, steps - warmup)
    )


def _training_sequences(lm: HFBackend, template: Template, examples: Sequence[Example]) -> list[tuple[list[int], int]]:
    """(token ids of prompt + gold answer, number of prompt tokens) per example: the very tokens a zero-shot
    query scores for the right answer (for partial scoring, the text after the right option)."""
    sequences = []
    for example in examples:
        prompt, index = gold_sequence(template, example)
        context_text, continuation_texts = scored_texts(prompt, lm)  # as a query scores it: the very tokens
        continuation_text = continuation_texts[index]
        context = lm.encode(context_text, is_context=True)
        continuation = lm.encode(continuation_text, is_context=False)
        if len(context) + len(continuation) > lm.token_window:
            raise HarnessError(f"training example {example.id} needs {len(context) + len(continuation)} tokens, "
                               f"more than the context window of {lm.name} ({lm.token_window})")
        sequences.append((context + continuation, len(context)))
    return sequences


def _batch_order(count: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Seeded epochs: each epoch is a fresh permutation, cut into batches; as many as `steps`."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(rng.permutation(count).tolist())
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def _collate(sequences: Sequence[tuple[list[int], int]], lm: HFBackend) -> tuple[torch.Tensor, ...]:
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), lm.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)  # only verbalizer tokens carry loss
    for row, (ids, context_length) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, context_length : len(ids)] = torch.tensor(ids[context_length:])
    return input_ids, attention_mask, labels


def _parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


def load_trained(lm: HFBackend, method_name: str, run_dir: Path) -> None:
    """Apply what a fine-tuning run saved in `run_dir` to a freshly loaded base model."""
    learning_method(method_name).load(lm, run_dir)
    lm.model.eval()


def remove_trained(run_dir: Path) -> None:
    """Delete what finetune saved in `run_dir` (a run with method.save_weights=false keeps it only until its
    record is written, so an interrupted scoring does not retrain)."""
    shutil.rmtree(run_dir / ADAPTER_DIR, ignore_errors=True)
    (run_dir / WEIGHTS_FILE).unlink(missing_ok=True)
