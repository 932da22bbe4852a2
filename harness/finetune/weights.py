"""What the methods that change the model's own parameters share (BitFit, full fine-tuning): the changed tensors
saved as safetensors in the run directory and loaded back over a freshly loaded model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.finetune.method import WEIGHTS_FILE, Finish

if TYPE_CHECKING:
    import torch

    from harness.engine.hf.backend import HFBackend


def save_trainable(model: torch.nn.Module) -> Finish:
    """Afterwards: the parameters that trained are saved, and freeze again."""
    from safetensors.torch import save_file

    def finish(save_dir: Path | None) -> None:
        if save_dir is not None:
            changed = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
            save_dir.mkdir(parents=True, exist_ok=True)
            save_file(changed, str(save_dir / WEIGHTS_FILE))
        for parameter in model.parameters():
            parameter.requires_grad = False

    return finish


def load_changed_weights(lm: HFBackend, run_dir: Path) -> None:
    from safetensors.torch import load_file

    result = lm.model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILE), device=str(lm.device)), strict=False)
    if result.unexpected_keys:
        raise HarnessError(f"{run_dir / WEIGHTS_FILE} does not fit this model: {result.unexpected_keys[:3]}")
