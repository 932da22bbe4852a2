"""What the tests share besides their fixtures (tests/conftest.py): the tokenizer and GGUF builders, task roots
written to disk, run records written by hand, and the ways of running the harness (command line, in process)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.__main__ import main
from harness.files import jsonl_text, sha256_text
from harness.runs.records import Cost, Inputs, RunRecord, TrainingRecord, run_dir_name, run_key

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

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



# --- task roots (HARNESS_PATH): files as a user writes them -------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_toy_task(root: Path) -> Path:
    """A HARNESS_PATH root with a toy sentiment task, its data and templates (good and broken)."""
    data = root / "data"
    train = [{"id": f"tr{i}", "text": t, "label": 1} for i, t in enumerate(POSITIVE[:6])]
    train += [{"id": f"tr{i + 6}", "text": t, "label": 0} for i, t in enumerate(NEGATIVE[:6])]
    test = [{"id": f"te{i}", "text": t, "label": 1} for i, t in enumerate(POSITIVE[6:])]
    test += [{"id": f"te{i + 2}", "text": t, "label": 0} for i, t in enumerate(NEGATIVE[6:])]
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "test.jsonl", test)
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
    write_jsonl(data / "train.jsonl", rows[:20])
    write_jsonl(data / "test.jsonl", rows[20:])
    (root / "tasks").mkdir()
    (root / "tasks" / "long.yaml").write_text(
        "name: long\nfields: [text]\nlabels: {neg: bad, pos: good}\ndemo_split: train\neval_split: test\n"
        f"default_template: plain\ndata_dir: {data}\n"
        "files:\n  splits: {train: train.jsonl, test: test.jsonl}\n  label_values: {0: neg, 1: pos}\n")
    (root / "prompts" / "long").mkdir(parents=True)
    (root / "prompts" / "long" / "plain.yaml").write_text('example: "Text: {{ text }}\\nLabel: {{ answer }}"\n')
    return root


def write_mc_task(root: Path) -> Path:
    """A HARNESS_PATH root with a toy multiple-choice task: options of several tokens, a subject per item."""
    rows = [{"id": f"q{i}", "question": q, "options": options, "answer": answer, "topic": topic}
            for i, (q, options, answer, topic) in enumerate([
                ("What is warm and funny?", ["a delight", "a dull mess", "a waste of time"], 0, "film"),
                ("Which is boring?", ["brilliant work", "boring and too long"], 1, "film"),
                ("The team _ the football match.", ["won", "lost badly", "cheered"], 0, "sport"),
                ("Fans _ the team.", ["cheered", "hated"], 0, "sport"),
                ("A cat and a dog _ .", ["played", "flat acting", "moving"], 0, "pets"),
                ("I _ every minute.", ["loved", "hated it"], 0, "film")])]
    (root / "data").mkdir(parents=True)
    (root / "data" / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "tasks").mkdir()
    (root / "tasks" / "toymc.yaml").write_text(
        "name: toymc\nkind: choice\nfields: [question, topic]\ndemo_split: test\neval_split: test\n"
        "default_template: qa\nmetrics: [acc, acc_norm, acc_bytes]\nmetrics_by: topic\n"
        f"data_dir: {root / 'data'}\n"
        "files:\n  splits: {test: items.jsonl}\n  columns: {choices: options, gold: answer}\n")
    prompts = root / "prompts" / "toymc"
    prompts.mkdir(parents=True)
    (prompts / "qa.yaml").write_text('example: "Q: {{ question }}\\nA: {{ answer }}"\n')
    (prompts / "blank.yaml").write_text(
        "example: \"{{ question[:question.index('_')] }}{{ answer }}\"\n"
        "continuation: \" {{ question[question.index('_') + 1:].strip() }}\"\n")
    return root


def write_short_answer_task(tmp_path: Path, name: str, rows: list[tuple[str, list[str]]], settings: str) -> Path:
    """A HARNESS_PATH root with a short-answer task `name` over (question, accepted answers) rows; `settings`
    is its metrics and answer YAML; template "Q: ...\\nA: ..."."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    lines = [json.dumps({"question": question, "answers": answers}) + "\n" for question, answers in rows]
    (root / "data" / "qa.jsonl").write_text("".join(lines))
    (root / "tasks").mkdir()
    (root / "tasks" / f"{name}.yaml").write_text(
        f"name: {name}\nkind: generate\nfields: [question]\ndemo_split: qa\neval_split: qa\ndefault_template: qa\n"
        f"{settings}data_dir: {root / 'data'}\nfiles:\n  splits: {{qa: qa.jsonl}}\n"
        "  columns: {choices: answers, gold: '0'}\n")
    (root / "prompts" / name).mkdir(parents=True)
    (root / "prompts" / name / "qa.yaml").write_text('example: "Q: {{ question }}\\nA: {{ answer }}"\n')
    return root



DOCUMENTS = [
    "a joyful film and a fine plot, the acting was very good. It was great. A great one.",
    "boring and too long",
    "I loved every minute. The film was a good one and the plot was bad, but the acting was very good. " * 3,
    "",
]


def write_documents_task(tmp_path: Path) -> Path:
    """A HARNESS_PATH root with a perplexity task over DOCUMENTS (words and bytes counted on a raw column)."""
    root = tmp_path / "root"
    (root / "tasks").mkdir(parents=True)
    (root / "prompts" / "docs").mkdir(parents=True)
    data = root / "data"
    data.mkdir()
    rows = [{"raw": text, "text": text.replace(" , ", ", ")} for text in DOCUMENTS]
    (data / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "tasks" / "docs.yaml").write_text(
        "name: docs\nkind: perplexity\nfields: [text, raw]\ndemo_split: test\neval_split: test\n"
        f"default_template: whole\nmetrics: [word_perplexity, byte_perplexity, bits_per_byte]\nunits_field: raw\n"
        f"data_dir: {data}\nfiles:\n  splits: {{test: test.jsonl}}\n")
    (root / "prompts" / "docs" / "whole.yaml").write_text('example: "{{ text }}"\n')
    return root


# --- run records written by hand, as harness.runs.run writes them ---------------------------------------------

ITEMS = [f"i{n}" for n in range(10)]
GOLD = ["neg" if n % 2 == 0 else "pos" for n in range(10)]


def write_run(results: Path, *, method: str = "icl", shots: int = 4, seed: int = 1, correct: set[int],
              task: str = "toy", model: str = "m", template: str = "plain", macro_f1: float | None = None,
              tokens: float = 200.0, training: dict | None = None, config: dict | None = None,
              calibration: str = "none", ece: float | None = None, uncalibrated: dict | None = None,
              inputs: dict | None = None, stderr: dict | None = None, cost: dict | None = None,
              metric: str = "accuracy") -> Path:
    """A run record as harness.runs.run writes it: config.yaml, predictions.jsonl, metrics.json (a RunRecord)."""
    settings = {"task": {"name": task}, "model": {"name": model, "path": f"/models/{model}"},
                "method": {"name": method, "save_weights": True}, "template": None, "shots": shots, "seed": seed,
                "demos": "random", "output_dir": str(results), "batch_size": 8, **(config or {})}
    hashes = Inputs(**{"task_file": "t", "template_file": template, "eval_data": "e", "demo_data": "d",
                       "model": model, **(inputs or {})})
    key = run_key(settings, hashes)
    run_dir = results / run_dir_name(settings, key)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(settings))
    flip = {"neg": "pos", "pos": "neg"}
    rows = [{"id": item, "gold": gold, "prediction": gold if n in correct else flip[gold], "demo_ids": [],
             "dropped_demos": 0} for n, (item, gold) in enumerate(zip(ITEMS, GOLD))]
    predictions = jsonl_text(rows)
    (run_dir / "predictions.jsonl").write_text(predictions)
    metrics = ({"accuracy": len(correct) / 10, "macro_f1": macro_f1 or len(correct) / 10} if metric == "accuracy"
               else {metric: len(correct) / 10})  # a multiple-choice task's acc
    record = RunRecord(
        task=task, model=model, method=method, template=template, shots=shots, seed=seed, scorer="rank",
        calibration=calibration, demos=settings["demos"], run_key=key, inputs=hashes, n=10,
        metrics=metrics | ({"ece": ece} if ece is not None else {}), stderr=stderr or {}, by=None,
        uncalibrated=uncalibrated,
        demo_ids=[],
        train_ids=[], examples_with_dropped_demos=0, predictions_sha256=sha256_text(predictions),
        cost=Cost(**{"wall_time_s": 1.0, "scoring_time_s": 0.5, "tokens_scored": 100, "tokens_forwarded": 100,
                     "tokens_scored_per_s": 200.0, "inference_tokens_per_example": tokens, "examples_resumed": 0,
                     **(cost or {})}),
        training=TrainingRecord(**training) if training else None, calibration_scores=None, environment={},
    )
    (run_dir / "metrics.json").write_text(record.to_json())
    return run_dir


# --- running the harness --------------------------------------------------------------------------------------

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

    from harness.cli.configs import register_configs
    from harness.cli.run import CONFIG_DIR, _expand_model_override

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = hydra_compose(config_name="config", overrides=_expand_model_override(list(overrides)))
    return OmegaConf.to_object(config)


def run_in_process(*overrides: str):
    """One run as `python -m harness run` does it, in this process; returns its RunResult."""
    from harness.runs.run import run

    return run(compose(*overrides), progress=False)


def report(capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str, str]:
    code = main(["report", *map(str, arguments)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def in_headless_browser(page: str, script: str, tmp_path: Path) -> dict:
    """Load the report page with `script` added in headless Chromium; what the script wrote into #browser-check.
    Skips where no browser is installed."""
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        pytest.skip(f"no headless browser on PATH ({', '.join(BROWSERS)}); on Debian: apt-get install chromium")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", script + "</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", probe.as_uri()], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout)
    assert found, done.stdout[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


def one_error_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """The one `error:` line a command failed with (status `code`, no traceback)."""
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]
