"""Rolling log-likelihood (kind: perplexity): windows as lm-evaluation-harness cuts them, scores equal to a
plain forward pass, the corpus metrics, and the wikitext task's detokenizer."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from harness.engine.rolling import rolling_windows
from helpers import DOCUMENTS, compose, run_cli, write_documents_task


def test_windows_cover_every_token_once_in_order() -> None:
    assert rolling_windows(range(10), 99, 4) == [
        ((99,), (0, 1, 2, 3)),  # the first window: the prefix token, then the first tokens
        ((3,), (4, 5, 6, 7)),  # a full window: the token before it
        ((5, 6, 7), (8, 9)),  # the last: as many tokens before it as fill the window
    ]
    assert rolling_windows([], 99, 4) == []
    for length in range(1, 30):
        for window in (1, 2, 3, 7, 64):
            tokens = list(range(100, 100 + length))
            pairs = rolling_windows(tokens, 99, window)
            assert [token for _, continuation in pairs for token in continuation] == tokens
            for context, continuation in pairs:
                inputs = [*context, *continuation[:-1]]
                assert len(inputs) <= window and len(context) >= 1
                start = tokens.index(continuation[0])
                assert list(context) == ([99] + tokens)[max(0, start + 1 - len(context)): start + 1]


def _reference_loglikelihood(lm, ids: list[int]) -> float:
    """The text's log-likelihood from plain forward passes over the same windows (no batching, no padding)."""
    import torch

    total = 0.0
    for context, continuation in rolling_windows(ids, lm.prefix_token_id, lm.token_window):
        inputs = torch.tensor([[*context, *continuation[:-1]]])
        with torch.inference_mode():
            logprobs = torch.log_softmax(lm.model(input_ids=inputs).logits[0].float(), dim=-1)
        first = len(context) - 1
        total += sum(logprobs[first + i, token].item() for i, token in enumerate(continuation))
    return total


@pytest.mark.parametrize("window", [None, 12])
def test_documents_score_as_plain_forward_passes(tiny_llama_dir: Path, window: int | None) -> None:
    from harness.engine.hf.loading import load_backend
    from harness.engine.rolling import score_documents

    overrides = [f"model={tiny_llama_dir}"] + ([f"model.max_length={window}"] if window else [])
    lm = load_backend(compose(*overrides).model, "cpu")
    for batch_size in (None, 1, 3):
        scores = score_documents(lm, DOCUMENTS, batch_size, progress=False)
        for text, value, tokens, windows in zip(DOCUMENTS, scores.loglikelihoods, scores.tokens, scores.windows):
            ids = lm.encode(text, is_context=False)
            assert tokens == len(ids) and windows == math.ceil(len(ids) / lm.token_window)
            assert value == pytest.approx(_reference_loglikelihood(lm, ids), abs=1e-4)
    if window:
        assert max(scores.windows) > 3  # the long text really was cut


def test_a_perplexity_run_records_the_corpus_metrics(tmp_path: Path, harness_env: dict, tiny_llama_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import read_record, run_in_process

    monkeypatch.setenv("HARNESS_PATH", str(write_documents_task(tmp_path)))
    done = run_in_process("task=docs", f"model={tiny_llama_dir}", "model.max_length=12",
                          f"output_dir={tmp_path / 'out'}")
    rows = [json.loads(line) for line in (done.run_dir / "predictions.jsonl").read_text().splitlines()]
    total = sum(row["loglikelihood"] for row in rows)
    words = sum(len(re.split(r"\s+", text)) for text in DOCUMENTS)
    text_bytes = sum(len(text.encode("utf-8")) for text in DOCUMENTS)
    assert [row["words"] for row in rows] == [len(re.split(r"\s+", text)) for text in DOCUMENTS]
    metrics = read_record(done.run_dir).metrics
    assert metrics["word_perplexity"] == pytest.approx(math.exp(-total / words))
    assert metrics["byte_perplexity"] == pytest.approx(math.exp(-total / text_bytes))
    assert metrics["bits_per_byte"] == pytest.approx(-total / text_bytes / math.log(2))
    assert rows[-1]["loglikelihood"] == 0 and rows[-1]["windows"] == 0  # an empty text: nothing to predict
    again = run_in_process("task=docs", f"model={tiny_llama_dir}", "model.max_length=12", "batch_size=1",
                           f"output_dir={tmp_path / 'again'}")
    assert again.run_dir.name == done.run_dir.name
    assert read_record(again.run_dir).metrics == pytest.approx(metrics, rel=1e-6)
    from harness.__main__ import main

    assert main(["report", str(tmp_path / "out")]) == 0  # a perplexity run in the report: its metrics, ranked
    assert "word perplexity" in (tmp_path / "out" / "report" / "report.md").read_text()


@pytest.mark.parametrize("setting", ["shots=2", "method=lora", "calibration=contextual"])
def test_a_perplexity_task_refuses_what_does_not_apply(tmp_path: Path, harness_env: dict, tiny_model_dir: Path,
                                                       setting: str) -> None:
    env = {**harness_env, "HARNESS_PATH": str(write_documents_task(tmp_path))}
    done = run_cli("run", "task=docs", f"model={tiny_model_dir}", setting, f"output_dir={tmp_path}", env=env,
                   cwd=tmp_path)
    assert done.returncode == 2 and "scores whole texts by their rolling log-likelihood" in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0


def _lmeval_wikitext_detokenizer(string: str) -> str:
    """lm-evaluation-harness 0.4.13's tasks/wikitext/preprocess_wikitext.py wikitext_detokenizer, transcribed."""
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for mark in (":", ";", ".", "!", "?", ","):
        string = string.replace(f" {mark} ", f"{mark} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176)).replace(" \n", "\n").replace("\n ", "\n")
    return string.replace(" N ", " 1 ").replace(" 's", "'s")


WIKITEXT_PAGE = (
    " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 , "
    "lit . Valkyria of the Battlefield 3 ) , commonly referred to as Valkyria Chronicles III outside Japan , is a "
    "tactical role @-@ playing video game . It sold 1 @,@ 000 copies at 3 @.@ 5 % ; the players ' \" Nameless \" "
    "squad [ a penal unit ] { of sorts } took 45 ° N ! Was it ' good ' ? The game 's story N times . \n = = "
    "Gameplay = = \n = = = Plot = = = \n = = = = Music = = = = \n"
)


def test_the_wikitext_template_is_lmeval_detokenizer_and_counts_the_raw_page(harness_env: dict) -> None:
    from harness.inputs.data import _to_examples
    from harness.inputs.prompts import load_template
    from harness.metrics.functions import count_words

    task = compose("task=wikitext").task
    [example] = _to_examples(task, task.hub, "test", [{"page": WIKITEXT_PAGE}])  # the hub dataset's row
    rendered = load_template(task, "lmeval").render(example, "")
    assert rendered == _lmeval_wikitext_detokenizer(WIKITEXT_PAGE)
    assert rendered != WIKITEXT_PAGE and "role-playing" in rendered and "(Japanese:" in rendered
    assert task.units_field == "page" and count_words(example.fields["page"]) == len(re.split(r"\s+", WIKITEXT_PAGE))
