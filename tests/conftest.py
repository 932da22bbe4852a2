"""Shared fixtures: a tokenizer, tiny GPT-2, Llama and Gemma 3 models, a GGUF, and toy task roots, all built here
(the builders are in tests/helpers.py).

No network: HF_HUB_OFFLINE=1, and the harness cache lives in a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import build_test_tokenizer, write_llama_gguf, write_mc_task, write_toy_task

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest -n N: the workers share the cores, as parallel runs do
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A randomly initialised 2-layer GPT-2 with the test tokenizer (no pad, no BOS added)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)
    target = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama (no biases anywhere, grouped keys and values) with the test tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    target = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A randomly initialised 3-layer Gemma 3 (two sliding-window layers of 8 positions, then a global one; one
    key-value head) whose tokenizer prepends BOS by itself, as Gemma's does: every test prompt is longer than
    the window."""
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)])
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                              sliding_window=8, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.eos_token_id)
    target = tmp_path_factory.mktemp("models") / "tiny-gemma3"
    Gemma3ForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_llama_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    return write_llama_gguf(tiny_llama_dir, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HARNESS_PATH root with a toy sentiment task, its data and templates (good and broken)."""
    return write_toy_task(tmp_path_factory.mktemp("taskroot"))


@pytest.fixture(scope="session")
def mc_task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HARNESS_PATH root with a toy multiple-choice task: options of several tokens, a subject per item."""
    return write_mc_task(tmp_path_factory.mktemp("mcroot"))


@pytest.fixture()
def harness_env(task_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for in-process and subprocess runs: toy tasks visible, cache isolated."""
    monkeypatch.setenv("HARNESS_PATH", str(task_root))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return dict(os.environ)


