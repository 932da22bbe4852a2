"""BitFit (Ben Zaken et al. 2022): only the bias terms train. Architectures without biases (Llama, SmolLM2) get
zero-initialised biases on every linear layer of the decoder, which changes nothing at start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.finetune.method import Finish, Method, register_method
from harness.finetune.weights import load_changed_weights, save_trainable

if TYPE_CHECKING:
    import torch

    from harness.config import MethodConfig
    from harness.engine.hf.backend import HFBackend


def add_missing_biases(model: torch.nn.Module) -> None:
    """Llama-style linear layers have no biases: give them zero ones, which leave the outputs unchanged."""
    import torch

    output_layer = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.bias is None and module is not output_layer:
            module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype,
                                                         device=module.weight.device))


@register_method
class BitFit(Method):
    name = "bitfit"
    description = "bias terms only (zero biases added where the architecture has none)"
    defaults = {"learning_rate": 1.0e-3, "steps": 16}

    def prepare(self, lm: HFBackend, config: MethodConfig) -> tuple[torch.nn.Module, Finish]:
        add_missing_biases(lm.model)
        for name, parameter in lm.model.named_parameters():
            parameter.requires_grad = name.endswith("bias")
        return lm.model, save_trainable(lm.model)

    def load(self, lm: HFBackend, run_dir: Path) -> None:
        add_missing_biases(lm.model)
        load_changed_weights(lm, run_dir)
