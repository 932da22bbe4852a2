"""Ways of learning from the k examples, as registered objects (`method=NAME`): in context (icl, no training) or by
light fine-tuning. A fine-tuning method says how it makes the model trainable, how the trained model goes back to
plain scoring form, how what changed is saved in the run directory and applied again to a freshly loaded model,
and its default hyperparameters (registered with Hydra as the `method` config group, so `method=lora` and
`method.steps=32` compose as before). `python -m harness list`, the sensitivity study and planning read the
registry; importing it loads no torch (the methods import it when they train).

Adding a method: a module beside lora.py with a registered subclass of Method, and its name in BUILTIN.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from harness.errors import HarnessError

if TYPE_CHECKING:
    import torch

    from harness.config import MethodConfig
    from harness.engine.hf.backend import HFBackend

# the modules of the built-in fine-tuning methods, imported (and so registered) on the first lookup
BUILTIN = ("harness.finetune.lora", "harness.finetune.ia3", "harness.finetune.prompt_tuning", "harness.finetune.bitfit",
           "harness.finetune.full")
ADAPTER_DIR = "adapter"  # peft methods: peft's own safetensors format
MERGED_DIR = "merged"  # the trained model as whole weights, for a backend that serves but cannot train (vllm)
WEIGHTS_FILE = "weights.safetensors"  # methods that change weights in place: the tensors that changed

Finish = Callable[[Path | None], None]  # turns the trained model into scoring form, saving what changed to a dir


@dataclass(frozen=True)
class TrainingRecord:
    """What training cost and did (a run record's `training`)."""

    trainable_parameters: int
    total_parameters: int
    steps: int
    examples_seen: int
    tokens_seen: int
    train_time_s: float
    peak_memory_mb: float
    train_flops: float
    losses: list[float]  # one per step


class Method(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    trains: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}  # MethodConfig fields this method sets (learning rate, steps, ...)
    # its trained model is plain weights (adapters merged), which any backend can load; a soft prompt is not
    merges: ClassVar[bool] = True

    @abstractmethod
    def prepare(self, lm: HFBackend, config: MethodConfig) -> tuple[torch.nn.Module, Finish]:
        """The module to train (its trainable parameters require gradients) and how to finish afterwards."""

    @abstractmethod
    def load(self, lm: HFBackend, run_dir: Path) -> None:
        """Apply what a run of this method saved in `run_dir` to a freshly loaded model."""


METHODS: dict[str, Method] = {}


def register_method(method: type[Method]) -> type[Method]:
    """Class decorator: the method becomes available as `method=<its name>`."""
    METHODS[method.name] = method()
    return method


def all_methods() -> dict[str, Method]:
    """Every registered method by name, icl first."""
    for module in BUILTIN:
        importlib.import_module(module)  # registers it, once
    return METHODS


def in_context(name: str) -> bool:
    """Whether a recorded run's method learned in context (trained nothing): the side fine-tuning is compared with.
    A name no longer registered counts as trained."""
    method = all_methods().get(name)
    return method is not None and not method.trains


def learning_method(name: str) -> Method:
    if name not in all_methods():
        raise HarnessError(f"unknown method '{name}' (methods: {', '.join(METHODS)})")
    return METHODS[name]


@register_method
class InContextLearning(Method):
    name = "icl"
    description = "in-context learning: the k examples in the prompt, no training"
    trains = False

    def prepare(self, lm: HFBackend, config: MethodConfig) -> tuple[torch.nn.Module, Finish]:
        raise HarnessError("method=icl trains nothing")

    def load(self, lm: HFBackend, run_dir: Path) -> None:
        raise HarnessError("method=icl saves no weights")
