"""Greedy generation: continuous batching against one-row decoding, the soft prompt of prompt tuning, parsing
outputs to labels, and a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.config import ModelConfig
from harness.engine.generation import cut_at_stop, generate_texts, parse_label
from harness.engine.hf.loading import load_backend
from harness.engine.request import ScoringRequest
from helpers import read_record, run_cli


@pytest.mark.parametrize("text,expected", [
    (" positive", 1), ("Positive.", 1), (" negative\\nReview: more", 0), ("  very good indeed", 2),
    (" positively", None), ("I think positive", None), ("", None),
])
def test_parse_label(text: str, expected: int | None) -> None:
    assert parse_label(text.replace("\\n", "\n"), ["negative", "positive", "very good", "very"]) == expected


def test_generation_run_records_texts_and_unparsed_outputs(tmp_path: Path, harness_env: dict,
                                                          tiny_model_dir: Path) -> None:
    done = run_cli("run", "task=toy", f"model={tiny_model_dir}", "scorer=generate", "max_new_tokens=3", "shots=2",
                   "batch_size=auto", f"output_dir={tmp_path}", env=harness_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [run_dir] = tmp_path.glob("toy__tiny-gpt2__icl__2shot__*")
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").open()]
    metrics = read_record(run_dir).metrics
    assert all("generation" in row and row["prediction"] in {None, "neg", "pos"} for row in rows)
    assert metrics["no_label_rate"] == sum(row["prediction"] is None for row in rows) / len(rows)
    assert metrics["accuracy"] == sum(row["prediction"] == row["gold"] for row in rows) / len(rows)


def _greedy_alone(lm, context: tuple[int, ...], steps: int, soft_prompt: torch.Tensor | None = None) -> list[int]:
    """Greedy tokens by full recompute, one request alone: what every batching must reproduce."""
    ids, out = list(context), []
    with torch.no_grad():
        for _ in range(steps):
            if soft_prompt is None:
                logits = lm.model(torch.tensor([ids])).logits
            else:
                embeddings = lm.model.get_input_embeddings()(torch.tensor([ids]))
                logits = lm.model(inputs_embeds=torch.cat([soft_prompt[None], embeddings], dim=1)).logits
            token = int(logits[0, -1].argmax())
            if token == lm.tokenizer.eos_token_id:
                break
            ids.append(token)
            out.append(token)
    return out


def _lively(model_dir: Path):
    """The tiny model with weights ten times the usual scale: at the usual 0.02 its greedy output mostly repeats the
    last token whatever came before, which would hide a row reading the wrong keys."""
    lm = load_backend(ModelConfig(name="tiny", path=str(model_dir)), "cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in lm.model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return lm


def _requests(lm, count: int, demos: int = 0) -> list[ScoringRequest]:
    """`count` requests of 3 to 40 tokens; with `demos`, the first half share a prefix of that many tokens (one
    prefix group) and the rest are alone."""
    vocabulary = lm.model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    shared = tuple(torch.randint(4, vocabulary, (demos,), generator=generator).tolist())
    requests = []
    for i in range(count):
        own = tuple(torch.randint(4, vocabulary, (3 + (i * 7) % 38,), generator=generator).tolist())
        grouped = demos and i < count // 2
        requests.append(ScoringRequest((shared if grouped else ()) + own, ((0,),), ("d",) if grouped else (f"{i}",), 0))
    return requests


@pytest.mark.parametrize("model_fixture", ["tiny_llama_dir", "tiny_gemma3_dir"])
def test_continuous_batching_equals_each_request_decoded_alone(model_fixture: str, request) -> None:
    """Rows refilled as requests finish, columns compacted and buffers grown (60 steps over 64 spare columns),
    a shared prefix, idle rows dropped at the end: the tokens of every request are those of a one-row greedy
    loop, whatever the number of rows; stop strings end a request where its text first contains one. On Gemma 3
    (sliding window 8) the gaps a refilled row leaves must not count as distance."""
    lm = _lively(request.getfixturevalue(model_fixture))
    requests = _requests(lm, 11, demos=12)
    alone = [_greedy_alone(lm, r.context_ids, 60) for r in requests]
    expected = [lm.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in alone]
    for rows in (1, 3, 8):
        texts, stats = generate_texts(lm, requests, 60, (), rows, progress=False)
        assert texts == expected, rows
        assert stats.tokens_forwarded < stats.tokens_scored  # the shared prefix ran once
    stop = max(set("".join(expected)) - {" "}, key="".join(expected).count)
    texts, _ = generate_texts(lm, requests, 60, [stop], 4, progress=False)
    assert texts == [cut_at_stop(text, [stop]) for text in expected]
    assert len({len(text) for text in texts}) > 3  # the rows did finish at different steps


def test_generation_after_prompt_tuning_reads_the_soft_prompt(tiny_llama_dir: Path) -> None:
    lm = _lively(tiny_llama_dir)
    requests = _requests(lm, 5)
    lm.soft_prompt = torch.randn((4, lm.model.config.hidden_size), generator=torch.Generator().manual_seed(1))
    expected = [lm.tokenizer.decode(_greedy_alone(lm, r.context_ids, 12, lm.soft_prompt), skip_special_tokens=True)
                for r in requests]
    without = [lm.tokenizer.decode(_greedy_alone(lm, r.context_ids, 12), skip_special_tokens=True) for r in requests]
    assert expected != without
    texts, _ = generate_texts(lm, requests, 12, (), 2, progress=False)
    assert texts == expected
