"""Light fine-tuning on the k examples an ICL run would show, under the same prompt.

Training is prompt-based (LM-BFF style): each example is rendered with the run's template,
exactly as a zero-shot query, and the loss is the cross-entropy of its gold verbalizer tokens
after the prompt. The tuned model is then scored by the same rank classification as ICL.

After training, LoRA and IA3 adapters are merged into the weights and prompt tuning leaves a
soft prompt on the HFBackend, so the one scorer serves every method.

Training FLOPs are estimated as (4 N + 2 N_trainable) per token seen: forward 2N, the backward
pass through activations 2N, and weight gradients 2 per trainable parameter (6N for full
tuning), with N the parameters that take part in matmuls (all parameters, tied ones once).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers.pytorch_utils import Conv1D

from harness.config import MethodConfig
from harness.engine.hf.backend import HFBackend
from harness.engine.memory import memory_in_use_mb
from harness.errors import HarnessError
from harness.inputs.data import Example
from harness.inputs.prompts import Template, gold_sequence
from harness.runs.records import TrainingRecord

ADAPTER_DIR = "adapter"  # peft methods: peft's own safetensors format
WEIGHTS_FILE = "weights.safetensors"  # bitfit and full: the tensors that changed


Finish = Callable[[Path | None], None]  # turns the trained model into scoring form, saving weights to a dir


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
    model, finish = PREPARE[method.name](lm, method)
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
        context_text, continuation_text = gold_sequence(template, example)
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


def _uses_conv1d(model: torch.nn.Module) -> bool:
    return any(isinstance(module, Conv1D) for module in model.modules())


def _prepare_lora(lm: HFBackend, method: MethodConfig) -> tuple[torch.nn.Module, Finish]:
    from peft import LoraConfig

    config = LoraConfig(r=method.rank, lora_alpha=method.alpha, lora_dropout=method.dropout,
                        target_modules=method.target_modules, fan_in_fan_out=_uses_conv1d(lm.model),
                        task_type="CAUSAL_LM")
    return _peft(lm, config)


def _prepare_ia3(lm: HFBackend, method: MethodConfig) -> tuple[torch.nn.Module, Finish]:
    from peft import IA3Config

    config = IA3Config(target_modules=method.target_modules, feedforward_modules=method.feedforward_modules,
                       fan_in_fan_out=_uses_conv1d(lm.model), task_type="CAUSAL_LM")
    return _peft(lm, config)


def _peft(lm: HFBackend, config) -> tuple[torch.nn.Module, Finish]:
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(lm.model, config)
    except ValueError as error:  # e.g. target modules not found in this architecture
        raise HarnessError(f"cannot apply {config.peft_type.value}: {str(error).splitlines()[0]}") from None

    def finish(save_dir: Path | None) -> None:
        if save_dir is not None:
            peft_model.save_pretrained(save_dir / ADAPTER_DIR)
        lm.model = peft_model.merge_and_unload()  # plain weights again: the scorer needs no peft

    return peft_model, finish


def _prepare_prompt_tuning(lm: HFBackend, method: MethodConfig) -> tuple[torch.nn.Module, Finish]:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens,
                                prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
    peft_model = get_peft_model(lm.model, config)

    def finish(save_dir: Path | None) -> None:
        if save_dir is not None:
            peft_model.save_pretrained(save_dir / ADAPTER_DIR)
        soft_prompt = peft_model.get_prompt_embedding_to_save("default")
        lm.model = peft_model.get_base_model()
        lm.soft_prompt = soft_prompt.to(lm.device, lm.model.dtype)

    return peft_model, finish


def _add_missing_biases(model: torch.nn.Module) -> None:
    """Llama-style linear layers have no biases: give them zero ones, which leave the outputs unchanged."""
    output_layer = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.bias is None and module is not output_layer:
            module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype,
                                                         device=module.weight.device))


def _prepare_bitfit(lm: HFBackend, method: MethodConfig) -> tuple[torch.nn.Module, Finish]:
    _add_missing_biases(lm.model)
    for name, parameter in lm.model.named_parameters():
        parameter.requires_grad = name.endswith("bias")
    return lm.model, _save_trainable(lm.model)


def _prepare_full(lm: HFBackend, method: MethodConfig) -> tuple[torch.nn.Module, Finish]:
    for parameter in lm.model.parameters():
        parameter.requires_grad = True
    return lm.model, _save_trainable(lm.model)


def _save_trainable(model: torch.nn.Module) -> Finish:
    def finish(save_dir: Path | None) -> None:
        if save_dir is not None:
            changed = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
            save_dir.mkdir(parents=True, exist_ok=True)
            save_file(changed, str(save_dir / WEIGHTS_FILE))
        for parameter in model.parameters():
            parameter.requires_grad = False

    return finish


def load_trained(lm: HFBackend, method_name: str, run_dir: Path) -> None:
    """Apply what a fine-tuning run saved in `run_dir` to a freshly loaded base model."""
    if method_name in ("lora", "ia3", "prompt_tuning"):
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(lm.model, run_dir / ADAPTER_DIR)
        if method_name == "prompt_tuning":
            lm.soft_prompt = peft_model.get_prompt_embedding_to_save("default").to(lm.device, lm.model.dtype)
            lm.model = peft_model.get_base_model()
        else:
            lm.model = peft_model.merge_and_unload()
    elif method_name in ("bitfit", "full"):
        if method_name == "bitfit":
            _add_missing_biases(lm.model)
        result = lm.model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILE), device=str(lm.device)), strict=False)
        if result.unexpected_keys:
            raise HarnessError(f"{run_dir / WEIGHTS_FILE} does not fit this model: {result.unexpected_keys[:3]}")
    else:
        raise HarnessError(f"method '{method_name}' saves no weights")
    lm.model.eval()


# The fine-tuning methods (config.Method minus icl): how each makes the model trainable and back.
PREPARE: dict[str, Callable[[HFBackend, MethodConfig], tuple[torch.nn.Module, Finish]]] = {
    "lora": _prepare_lora,
    "ia3": _prepare_ia3,
    "prompt_tuning": _prepare_prompt_tuning,
    "bitfit": _prepare_bitfit,
    "full": _prepare_full,
}


def remove_trained(run_dir: Path) -> None:
    """Delete what finetune saved in `run_dir` (a run with method.save_weights=false keeps it only until its
    record is written, so an interrupted scoring does not retrain)."""
    shutil.rmtree(run_dir / ADAPTER_DIR, ignore_errors=True)
    (run_dir / WEIGHTS_FILE).unlink(missing_ok=True)
