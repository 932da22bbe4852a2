"""Full fine-tuning, short: every weight trains, with a small learning rate for a few steps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.finetune.method import Finish, Method, register_method
from harness.finetune.weights import load_changed_weights, save_trainable

if TYPE_CHECKING:
    import torch

    from harness.config import MethodConfig
    from harness.engine.hf.backend import HFBackend


@register_method
class FullFineTuning(Method):
    name = "full"
    description = "every weight, at a small learning rate for a few steps"
    defaults = {"learning_rate": 2.0e-5, "steps": 16}

    def prepare(self, lm: HFBackend, config: MethodConfig) -> tuple[torch.nn.Module, Finish]:
        for parameter in lm.model.parameters():
            parameter.requires_grad = True
        return lm.model, save_trainable(lm.model)

    def load(self, lm: HFBackend, run_dir: Path) -> None:
        load_changed_weights(lm, run_dir)
