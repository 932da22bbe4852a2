"""What the peft methods share: an adapter trained on the model, saved in peft's own format, and merged into the
weights for scoring (LoRA, IA3), so the one scorer serves every method."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.finetune.method import ADAPTER_DIR, Finish

if TYPE_CHECKING:
    import torch

    from harness.engine.hf.backend import HFBackend


def uses_conv1d(model: torch.nn.Module) -> bool:
    """GPT-2's Conv1D layers store weights transposed: peft needs fan_in_fan_out for them."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in model.modules())


def merged_adapter(lm: HFBackend, config: Any) -> tuple[torch.nn.Module, Finish]:
    """The model wrapped with a fresh adapter of `config` (a peft config); afterwards the adapter is saved and
    merged into the weights."""
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


def load_merged_adapter(lm: HFBackend, run_dir: Path) -> None:
    from peft import PeftModel

    lm.model = PeftModel.from_pretrained(lm.model, run_dir / ADAPTER_DIR).merge_and_unload()
