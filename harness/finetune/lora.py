"""LoRA (Hu et al. 2022, through peft): low-rank updates of the attention and feed-forward weights, merged into
them after training. GPT-2's Conv1D layers get fan_in_fan_out automatically."""

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
class LoRA(Method):
    name = "lora"
    description = "LoRA adapters (peft), merged into the weights after training"
    defaults = {"learning_rate": 1.0e-3, "steps": 16, "rank": 8, "alpha": 16, "dropout": 0.0}

    def prepare(self, lm: HFBackend, config: MethodConfig) -> tuple[torch.nn.Module, Finish]:
        from peft import LoraConfig

        return merged_adapter(lm, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                             target_modules=config.target_modules, fan_in_fan_out=uses_conv1d(lm.model),
                                             task_type="CAUSAL_LM"))

    def load(self, lm: HFBackend, run_dir: Path) -> None:
        load_merged_adapter(lm, run_dir)
