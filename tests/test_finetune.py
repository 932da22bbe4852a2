"""Fine-tuning methods on tiny GPT-2 (Conv1D) and Llama models built in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import MethodConfig, ModelConfig
from harness.engine.hf.backend import HFBackend
from harness.engine.hf.loading import load_backend
from harness.engine.request import build_requests
from harness.engine.scoring import score_requests
from harness.finetune.train import finetune, load_trained
from harness.inputs.data import load_split
from harness.inputs.prompts import build_prompt, load_template
from harness.inputs.registry import load_task_node, task_files
from helpers import read_record, run_in_process

HIGH_RATES = {"lora": 2e-2, "ia3": 1e-1, "prompt_tuning": 1e-1, "bitfit": 2e-2, "full": 3e-3}


def _setup(model_dir: Path):
    task = OmegaConf.to_object(load_task_node(task_files()["toy"]))
    template = load_template(task, "plain")
    lm = load_backend(ModelConfig(name=model_dir.name, path=str(model_dir)), "cpu")
    return task, template, lm, load_split(task, "train"), load_split(task, "test")


def _scores(lm: HFBackend, template, examples) -> list[float]:
    """Every label's log-prob for every example, flattened."""
    requests = build_requests([build_prompt(template, [], e) for e in examples], lm)
    scores, _ = score_requests(lm, requests, batch_size=4, progress=False)
    return [value for s in scores for value in s.logprobs]


METHODS = ["lora", "ia3", "prompt_tuning", "bitfit", "full"]


# every method on both position schemes; on Gemma 3 (sliding windows, scaled embeddings) the adapter and the
# soft prompt, the two that touch its attention and its embeddings from outside
@pytest.mark.parametrize(("method", "architecture"), [(method, architecture) for architecture in ("gpt2", "llama")
                                                      for method in METHODS]
                         + [("lora", "gemma3"), ("prompt_tuning", "gemma3")])
def test_training_loss_goes_down_and_outputs_change(method: str, architecture: str, harness_env: dict,
                                                     tiny_model_dir: Path, tiny_llama_dir: Path,
                                                     tiny_gemma3_dir: Path) -> None:
    model_dir = {"gpt2": tiny_model_dir, "llama": tiny_llama_dir, "gemma3": tiny_gemma3_dir}[architecture]
    task, template, lm, train, test = _setup(model_dir)
    before = _scores(lm, template, test)
    config = MethodConfig(name=method, learning_rate=HIGH_RATES[method], steps=12, batch_size=12, warmup_ratio=0.0)
    record = finetune(lm, config, template, train, seed=1, save_dir=None, progress=False)
    assert record.steps == 12 and record.examples_seen == 12 * 12
    assert record.losses[-1] < record.losses[0] - 0.2, record.losses
    assert 0 < record.trainable_parameters <= record.total_parameters
    assert record.train_flops > 0 and record.tokens_seen > 0
    after = _scores(lm, template, test)
    assert after != pytest.approx(before, abs=1e-3)


def test_bitfit_changes_only_biases(harness_env: dict, tiny_model_dir: Path) -> None:
    task, template, lm, train, _ = _setup(tiny_model_dir)
    before = {name: p.detach().clone() for name, p in lm.model.named_parameters()}
    config = MethodConfig(name="bitfit", learning_rate=1e-2, steps=3, batch_size=4)
    finetune(lm, config, template, train, seed=1, save_dir=None, progress=False)
    after = dict(lm.model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.endswith("bias") for name in changed)


def test_bitfit_on_llama_adds_zero_biases_that_change_nothing_at_start(harness_env: dict, tiny_llama_dir: Path) -> None:
    task, template, lm, train, test = _setup(tiny_llama_dir)
    before = _scores(lm, template, test)
    record = finetune(lm, MethodConfig(name="bitfit", learning_rate=1e-9, steps=1, batch_size=2, warmup_ratio=0.0),
                      template, train, seed=1, save_dir=None, progress=False)
    assert record.trainable_parameters > 0
    assert _scores(lm, template, test) == pytest.approx(before, abs=1e-5)


def test_same_seed_trains_the_same(harness_env: dict, tiny_model_dir: Path) -> None:
    losses = []
    for _ in range(2):
        task, template, lm, train, _ = _setup(tiny_model_dir)
        config = MethodConfig(name="lora", learning_rate=5e-3, steps=4, batch_size=4)
        losses.append(finetune(lm, config, template, train, seed=3, save_dir=None, progress=False).losses)
    assert losses[0] == losses[1]


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "bitfit"])
def test_saved_weights_reproduce_the_tuned_model(method: str, tmp_path: Path, harness_env: dict,
                                                 tiny_model_dir: Path) -> None:
    run_dir = run_in_process("task=toy", f"model={tiny_model_dir}", f"method={method}", "shots=8", "method.steps=5",
                             f"method.learning_rate={HIGH_RATES[method]}", f"output_dir={tmp_path}").run_dir
    tuned = {row["id"]: list(row["scores"].values()) for row in map(json.loads, (run_dir / "predictions.jsonl").open())}
    task, template, lm, _, test = _setup(tiny_model_dir)
    base = _scores(lm, template, test)
    load_trained(lm, method, run_dir)
    reloaded = _scores(lm, template, test)
    assert reloaded == pytest.approx([value for e in test for value in tuned[e.id]], abs=1e-4)
    assert reloaded != pytest.approx(base, abs=1e-3)


def test_fine_tuning_trains_on_the_examples_icl_shows(tmp_path: Path, harness_env: dict, tiny_model_dir: Path) -> None:
    records = {}
    for method in ("icl", "lora"):
        records[method] = run_in_process("task=toy", f"model={tiny_model_dir}", f"method={method}", "shots=4", "seed=9",
                                         "method.steps=2" if method == "lora" else "limit=4",
                                         f"output_dir={tmp_path}").record
    assert len(records["icl"].demo_ids) == 4
    assert records["lora"].train_ids == records["icl"].demo_ids
    assert records["lora"].demo_ids == []  # eval_shots=0: the tuned model sees no demonstrations
    training = records["lora"].training
    assert training.steps == 2 and training.trainable_parameters < training.total_parameters
    assert records["icl"].cost.inference_tokens_per_example > records["lora"].cost.inference_tokens_per_example
    with_demos = run_in_process("task=toy", f"model={tiny_model_dir}", "method=lora", "shots=4", "seed=9",
                                "eval_shots=2", "method.steps=2", f"output_dir={tmp_path / 'eval_shots'}")
    assert read_record(with_demos.run_dir) == with_demos.record  # what was written is what the report reads
    assert with_demos.record.demo_ids == records["icl"].demo_ids[:2]
    assert with_demos.record.train_ids == records["icl"].demo_ids


def test_the_worked_example_of_docs_architecture_is_a_method_that_runs(tmp_path: Path, harness_env: dict,
                                                                      tiny_model_dir: Path) -> None:
    """docs/architecture.md adds a fine-tuning method in one module: that very code registers and trains."""
    import re

    from harness.finetune.method import METHODS
    from helpers import REPO

    guide = (REPO / "docs" / "architecture.md").read_text()
    source = re.search(r'```python\n("""Head tuning.*?)```', guide, re.S).group(1)
    exec(compile(source, "docs/architecture.md", "exec"), {})  # registers method=head
    try:
        result = run_in_process("task=toy", f"model={tiny_model_dir}", "method=head", "shots=4", "method.steps=2",
                                f"output_dir={tmp_path}")
    finally:
        METHODS.pop("head")
    training = result.record.training
    config = json.loads((tiny_model_dir / "config.json").read_text())
    head = config["n_embd"] * config["vocab_size"]  # the output layer (tied to the input embeddings): those only
    assert training.steps == 2 and training.trainable_parameters == head < training.total_parameters
    assert (result.run_dir / "weights.safetensors").is_file()
