"""Prompt tuning (Lester et al. 2021, through peft): trainable virtual-token embeddings prepended to every input,
initialised from randomly sampled vocabulary embeddings. After training the backend keeps them as its soft
prompt, which scoring and generation run before every input."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.finetune.method import ADAPTER_DIR, Finish, Method, register_method

if TYPE_CHECKING:
    import torch

    from harness.config import MethodConfig
    from harness.engine.hf.backend import HFBackend


@register_method
class PromptTuning(Method):
    name = "prompt_tuning"
    description = "a soft prompt of virtual tokens (peft), run before every input"
    defaults = {"learning_rate": 3.0e-2, "steps": 16, "num_virtual_tokens": 20}
    merges = False  # the soft prompt runs before every input: no weights hold it

    def prepare(self, lm: HFBackend, config: MethodConfig) -> tuple[torch.nn.Module, Finish]:
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                         prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
        peft_model = get_peft_model(lm.model, peft_config)

        def finish(save_dir: Path | None) -> None:
            if save_dir is not None:
                peft_model.save_pretrained(save_dir / ADAPTER_DIR)
            soft_prompt = peft_model.get_prompt_embedding_to_save("default")
            lm.model = peft_model.get_base_model()
            lm.soft_prompt = soft_prompt.to(lm.device, lm.model.dtype)

        return peft_model, finish

    def load(self, lm: HFBackend, run_dir: Path) -> None:
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(lm.model, run_dir / ADAPTER_DIR)
        lm.soft_prompt = peft_model.get_prompt_embedding_to_save("default").to(lm.device, lm.model.dtype)
        lm.model = peft_model.get_base_model()
