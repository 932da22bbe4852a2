"""Shared fixtures: a tokenizer, tiny GPT-2 and Llama models and a tiny synthetic task, all built here.

No network: HF_HUB_OFFLINE=1, and the harness cache lives in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest -n N: the workers share the cores, as parallel runs do
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

POSITIVE = ["a joyful film", "great acting and a fine plot", "I loved every minute", "warm and funny",
            "a delight", "brilliant work", "moving and beautiful", "superb from start to end"]
NEGATIVE = ["a dull mess", "boring and too long", "I hated it", "flat acting and a weak plot",
            "a waste of time", "tedious work", "clumsy and ugly", "awful from start to end"]


# What the tests' tokenizer is trained on: the toy reviews, the words of the test templates and verbalizers,
# and some plain English, so that common words are one token and rarer ones split into several.
TOKENIZER_CORPUS = [
    *POSITIVE, *NEGATIVE,
    "Text: Label: Review: Sentiment: Is the review good or bad? Rate the reviews.",
    "good bad very good very bad not good not at all wonderful truly wonderfully excellent",
    "the film was a good one and the plot was bad, but the acting was very good.",
    "It was great. It was terrible. A great one. A terrible one. positive negative neutral",
    "Question: Answer: Article: Input: Type: premise: hypothesis: prediction: True False",
]


def build_test_tokenizer(target: Path) -> Path:
    """A byte-level BPE (GPT-2's pre-tokenizer and decoder, one <|endoftext|> token that is BOS, EOS and UNK),
    trained on TOKENIZER_CORPUS: no download, and the same vocabulary on every run (BPE training is
    deterministic). Like GPT-2's, it adds no special tokens to what it encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TOKENIZER_CORPUS * 4, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                                      eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    wrapped.save_pretrained(target)
    return target


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


def write_llama_gguf(model_dir: Path, target: Path, architecture: str = "llama") -> Path:
    """The Llama at `model_dir` as llama.cpp's converter writes it (float32 tensors under GGUF names, query and
    key rows permuted for its rotary layout, the byte-level BPE vocabulary and merges): what transformers reads
    back from it is the same model and tokenizer."""
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    config = model.config
    writer = gguf.GGUFWriter(str(target), architecture)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    state = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = sorted(state["vocab"], key=state["vocab"].get)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token == tokenizer.bos_token else 1 for token in tokens])  # 3: control
    writer.add_token_merges([" ".join(merge) if isinstance(merge, list) else merge for merge in state["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_add_bos_token(False)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    heads = {"self_attn.q_proj": config.num_attention_heads, "self_attn.k_proj": config.num_key_value_heads}
    for name, parameter in model.state_dict().items():
        array = parameter.numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            writer.add_tensor("token_embd.weight", array)
        elif name == "model.norm.weight":
            writer.add_tensor("output_norm.weight", array)
        elif name.startswith("model.layers."):  # lm_head is tied to the embeddings: not written
            layer, module = name.split(".")[2], ".".join(name.split(".")[3:-1])
            if module in heads:
                n = heads[module]
                array = array.reshape(n, 2, array.shape[0] // n // 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)
            writer.add_tensor(f"blk.{layer}.{names[module]}.weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@pytest.fixture(scope="session")
def tiny_llama_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    return write_llama_gguf(tiny_llama_dir, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="session")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HARNESS_PATH root with a toy sentiment task, its data and templates (good and broken)."""
    root = tmp_path_factory.mktemp("taskroot")
    data = root / "data"
    train = [{"id": f"tr{i}", "text": t, "label": 1} for i, t in enumerate(POSITIVE[:6])]
    train += [{"id": f"tr{i + 6}", "text": t, "label": 0} for i, t in enumerate(NEGATIVE[:6])]
    test = [{"id": f"te{i}", "text": t, "label": 1} for i, t in enumerate(POSITIVE[6:])]
    test += [{"id": f"te{i + 2}", "text": t, "label": 0} for i, t in enumerate(NEGATIVE[6:])]
    _write_jsonl(data / "train.jsonl", train)
    _write_jsonl(data / "test.jsonl", test)
    (root / "tasks").mkdir()
    (root / "tasks" / "toy.yaml").write_text(
        "name: toy\nfields: [text]\nlabels: {neg: bad, pos: good}\ndemo_split: train\neval_split: test\n"
        f"default_template: plain\ndata_dir: {data}\n"
        "files:\n  splits: {train: train.jsonl, test: test.jsonl}\n  label_values: {0: neg, 1: pos}\n"
    )
    prompts = root / "prompts" / "toy"
    prompts.mkdir(parents=True)
    (prompts / "plain.yaml").write_text('example: "Text: {{ text }}\\nLabel: {{ answer }}"\nseparator: "\\n\\n"\n')
    (prompts / "instructed.yaml").write_text(
        'instruction: "Is the review good or bad?"\nexample: "Text: {{ text }}\\nLabel: {{ answer }}"\n'
        'separator: "\\n\\n"\n'
    )
    (prompts / "multi.yaml").write_text(
        'example: "Text: {{ text }}\\nLabel: {{ answer }}"\n'
        "answer_choices: {neg: not at all wonderful, pos: truly wonderfully excellent}\n"
    )
    (prompts / "channel.yaml").write_text('example: "Label: {{ answer }}\\nText: {{ text }}"\nseparator: "\\n\\n"\n')
    (prompts / "missing_field.yaml").write_text('example: "Text: {{ title }}\\nLabel: {{ answer }}"\n')
    (prompts / "empty_verbalizer.yaml").write_text(
        'example: "Text: {{ text }}\\nLabel: {{ answer }}"\nanswer_choices: {neg: "", pos: good}\n'
    )
    (prompts / "unsafe.yaml").write_text(
        "example: \"{{ text.__class__.__mro__[1].__subclasses__() }} {{ answer }}\"\n"
    )
    return root


REVIEW_WORDS = ["warm", "dull", "bright", "slow", "funny", "grim", "clever", "flat", "tender", "noisy"]


def write_long_task(root: Path) -> Path:
    """A HARNESS_PATH root whose task `long` has 700 test items: a run lasts long enough to be stopped midway."""
    data = root / "data"
    data.mkdir(parents=True)
    rows = [{"id": f"x{i}", "text": f"a {REVIEW_WORDS[i % 10]} and {REVIEW_WORDS[(i // 10) % 10]} film, take {i}",
             "label": i % 2} for i in range(720)]
    _write_jsonl(data / "train.jsonl", rows[:20])
    _write_jsonl(data / "test.jsonl", rows[20:])
    (root / "tasks").mkdir()
    (root / "tasks" / "long.yaml").write_text(
        "name: long\nfields: [text]\nlabels: {neg: bad, pos: good}\ndemo_split: train\neval_split: test\n"
        f"default_template: plain\ndata_dir: {data}\n"
        "files:\n  splits: {train: train.jsonl, test: test.jsonl}\n  label_values: {0: neg, 1: pos}\n")
    (root / "prompts" / "long").mkdir(parents=True)
    (root / "prompts" / "long" / "plain.yaml").write_text('example: "Text: {{ text }}\\nLabel: {{ answer }}"\n')
    return root


@pytest.fixture()
def harness_env(task_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for in-process and subprocess runs: toy tasks visible, cache isolated."""
    monkeypatch.setenv("HARNESS_PATH", str(task_root))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return dict(os.environ)


def run_cli(*arguments: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *arguments], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def read_record(run_dir: Path):
    """A run's metrics.json as the report reads it: a RunRecord, checked against its predictions.jsonl."""
    from harness.runs.records import read_run

    return read_run(run_dir)


def compose(*overrides: str):
    """The RunConfig the CLI would build from these overrides (in this process: no start-up cost)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from harness.cli.run import CONFIG_DIR, _expand_model_override
    from harness.inputs.registry import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = hydra_compose(config_name="config", overrides=_expand_model_override(list(overrides)))
    return OmegaConf.to_object(config)


def run_in_process(*overrides: str):
    """One run as `python -m harness run` does it, in this process; returns its RunResult."""
    from harness.runs.run import run

    return run(compose(*overrides), progress=False)
