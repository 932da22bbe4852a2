"""IA3 (Liu et al. 2022, through peft): learned rescaling of keys, values and feed-forward activations, merged into
the weights after training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.finetune.adapters import load_merged_adapter, merged_adapter, uses_conv1d
from harness.finetune.method import Finish, Method, register_method

if TYPE_CHECKING:
    import torch

    from harness.config import MethodConfig
    from harness.engine.hf.backend import HFBackend


@register_method
class IA3(Method):
    name = "ia3"
    description = "IA3 rescaling vectors (peft), merged into the weights after training"
    defaults = {"learning_rate": 1.0e-2, "steps": 16}

    def prepare(self, lm: HFBackend, config: MethodConfig) -> tuple[torch.nn.Module, Finish]:
        from peft import IA3Config

        return merged_adapter(lm, IA3Config(target_modules=config.target_modules,
                                            feedforward_modules=config.feedforward_modules,
                                            fan_in_fan_out=uses_conv1d(lm.model), task_type="CAUSAL_LM"))

    def load(self, lm: HFBackend, run_dir: Path) -> None:
        load_merged_adapter(lm, run_dir)
