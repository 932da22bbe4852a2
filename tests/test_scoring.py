"""Rank-classification scores: exact sums, cache on/off and batch-size invariance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.config import ModelConfig
from harness.engine.hf.backend import HFBackend
from harness.engine.hf.loading import load_backend
from harness.engine.request import ScoringRequest, build_requests
from harness.engine.scoring import score_requests
from harness.errors import HarnessError
from harness.inputs.prompts import Prompt


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma3"])
def lm(request: pytest.FixtureRequest, tiny_model_dir: Path, tiny_llama_dir: Path, tiny_gemma3_dir: Path) -> HFBackend:
    """GPT-2's learned absolute positions, Llama's rotary ones, and Gemma 3's sliding-window layers (every
    prompt here is longer than its window of 8) with a BOS its tokenizer adds."""
    model_dir = {"gpt2": tiny_model_dir, "llama": tiny_llama_dir, "gemma3": tiny_gemma3_dir}[request.param]
    return load_backend(ModelConfig(name="tiny", path=str(model_dir)), "cpu")


def _prompt(example_id: str, query: str, demos: tuple[str, ...] = ()) -> Prompt:
    return Prompt(
        example_id=example_id,
        instruction="Rate the reviews.\n\n",
        demonstrations=tuple(f"Text: {d}\nLabel: good\n\n" for d in demos),
        demo_ids=tuple(f"d{i}" for i in range(len(demos))),
        query=f"Text: {query}\nLabel:",
        continuations=(" not at all wonderful", " truly wonderfully excellent", " good", " very good", " very bad", " bad"),
    )


def _reference_logprob(lm: HFBackend, context: str, continuation: str) -> float:
    """Plain full recompute, one token at a time: log p(continuation | context)."""
    context_ids = lm.tokenizer(context)["input_ids"]  # with BOS where the tokenizer adds it (Gemma)
    continuation_ids = lm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(ids).logits[0].double(), dim=-1)
    return sum(
        logprobs[len(context_ids) - 1 + i, token].item() for i, token in enumerate(continuation_ids)
    )


def test_multi_token_verbalizer_is_the_sum_of_its_token_logprobs(lm: HFBackend) -> None:
    prompt = _prompt("x", "a warm and funny film", demos=("great", "a delight"))
    [scores], _ = score_requests(lm, build_requests([prompt], lm), batch_size=4, progress=False)
    for label, continuation in enumerate(prompt.continuations):
        expected = _reference_logprob(lm, prompt.context(), continuation)
        assert scores.logprobs[label] == pytest.approx(expected, abs=1e-4)
    assert scores.token_counts[:3] == (4, 3, 1) and scores.token_counts[3:] == (2, 2, 1)  # " very" is a shared stem


def test_scores_do_not_depend_on_batch_size_or_prefix_cache(lm: HFBackend) -> None:
    queries = ["dull", "a joyful film with a long title that goes on", "ok", "warm", "I hated it a lot", "fine"]
    prompts = [_prompt(f"q{i}", q, demos=("brilliant work", "awful from start to end")) for i, q in enumerate(queries)]
    requests = build_requests(prompts, lm)
    reference, _ = score_requests(lm, requests, batch_size=1, prefix_cache=False, progress=False)
    batchings = [{"batch_size": size} for size in (1, 2, 5, 64)]
    batchings += [{"batch_size": None, "batch_tokens": budget} for budget in (1, 30, 90, None)]  # token budgets
    for batching in batchings:
        for prefix_cache in (True, False):
            scores, _ = score_requests(lm, requests, prefix_cache=prefix_cache, progress=False, **batching)
            for got, want in zip(scores, reference):
                assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
                assert got.greedy == want.greedy


def test_a_token_budget_holds_short_rows_many_at_once_and_long_rows_few(lm: HFBackend, monkeypatch) -> None:
    """batch_size=auto: batches by the positions they run (padding included), whatever their request count."""
    import harness.engine.hf.backend as hf_backend

    long_query = "a joyful film with a long title that goes on and on about nothing at all, for pages and pages"
    prompts = [_prompt(f"q{i}", query) for i, query in enumerate([long_query, long_query, *"abcdefgh"])]
    requests = build_requests(prompts, lm)
    real_score_batch = hf_backend.score_batch
    batches: list[tuple[int, int]] = []  # (requests, positions the query rows run)

    def recorded(*args):
        chosen, shared = args[-1], args[2]
        batches.append((len(chosen), len(chosen) * max(len(r.context_ids) - shared for r in chosen)))
        return real_score_batch(*args)

    monkeypatch.setattr(hf_backend, "score_batch", recorded)
    budget = 3 * (len(requests[0].context_ids) + 1)
    score_requests(lm, requests, batch_size=None, batch_tokens=budget, progress=False)
    assert batches[0][0] < batches[-1][0]  # the long queries come first, fewer at once
    assert sum(count for count, _ in batches) == len(requests)
    assert all(positions <= budget for _, positions in batches)


def test_rerun_forms_the_same_batches(lm: HFBackend, monkeypatch) -> None:
    """The journal holds whole batches: a budget must cut the same ones every time (and from any resumed point
    the rest is cut as an uninterrupted run cuts it, tests/test_reliability.py)."""
    import harness.engine.hf.backend as hf_backend

    prompts = [_prompt(f"q{i}", "word " * (i % 7)) for i in range(23)]
    requests = build_requests(prompts, lm)
    real_score_batch = hf_backend.score_batch
    seen: list[list[tuple[int, ...]]] = []

    def recorded(*args):
        seen[-1].append(tuple(r.context_ids for r in args[-1]))
        return real_score_batch(*args)

    monkeypatch.setattr(hf_backend, "score_batch", recorded)
    for _ in range(2):
        seen.append([])
        score_requests(lm, requests, batch_size=None, batch_tokens=40, progress=False)
    assert seen[0] == seen[1] and len(seen[0]) > 2


def test_prefix_cache_runs_the_shared_prefix_once(lm: HFBackend) -> None:
    prompts = [_prompt(f"q{i}", q, demos=("brilliant work", "a delight")) for i, q in enumerate(["dull", "warm"])]
    requests = build_requests(prompts, lm)
    _, cached = score_requests(lm, requests, batch_size=8, prefix_cache=True, progress=False)
    _, uncached = score_requests(lm, requests, batch_size=8, prefix_cache=False, progress=False)
    assert cached.tokens_scored == uncached.tokens_scored
    assert cached.tokens_forwarded < uncached.tokens_forwarded


def test_requests_for_different_demonstration_sets_are_scored_separately(lm: HFBackend) -> None:
    prompts = [_prompt("a", "dull", demos=("great",)), _prompt("b", "dull", demos=("a delight", "superb"))]
    requests = build_requests(prompts, lm)
    scores, _ = score_requests(lm, requests, batch_size=8, progress=False)
    for prompt, score in zip(prompts, scores):
        assert score.logprobs[2] == pytest.approx(_reference_logprob(lm, prompt.context(), " good"), abs=1e-4)


def test_context_window_policy_drops_oldest_demonstrations(lm: HFBackend) -> None:
    lm_small = HFBackend(lm.name, lm.model, lm.tokenizer, lm.device, max_length=40, add_bos=None)
    demos = ("first demonstration is here", "second one", "third and last one")
    [request] = build_requests([_prompt("x", "short", demos=demos)], lm_small)
    assert request.dropped_demos >= 1
    assert request.demo_ids == ("d0", "d1", "d2")[request.dropped_demos :]
    assert len(request.context_ids) + max(map(len, request.continuation_ids)) <= 40


def test_a_test_input_longer_than_the_window_is_an_error_not_a_cut(lm: HFBackend) -> None:
    from harness.errors import HarnessError

    lm_small = HFBackend(lm.name, lm.model, lm.tokenizer, lm.device, max_length=12, add_bos=None)
    with pytest.raises(HarnessError, match="context window"):
        build_requests([_prompt("x", "a very long review " * 5)], lm_small)


def test_bos_is_the_tokenizers_choice_unless_add_bos_says(lm: HFBackend) -> None:
    """GPT-2's and Llama's test tokenizer add nothing; Gemma's prepends BOS. model.add_bos overrides either way,
    and a continuation never gets one."""
    words = lm.tokenizer("Text: hi", add_special_tokens=False)["input_ids"]
    bos = lm.tokenizer.bos_token_id
    tokenizer_adds_bos = lm.model.config.model_type == "gemma3_text"
    assert lm.encode("Text: hi", is_context=True) == ([bos] if tokenizer_adds_bos else []) + words
    for add_bos, expected in ((True, [bos, *words]), (False, words)):
        variant = HFBackend(lm.name, lm.model, lm.tokenizer, lm.device, lm.max_length, add_bos=add_bos)
        assert variant.encode("Text: hi", is_context=True) == expected
        assert variant.encode(" good", is_context=False) == lm.tokenizer(" good", add_special_tokens=False)["input_ids"]


def test_scoring_request_is_what_the_tokenizer_gives(lm: HFBackend) -> None:
    prompt = _prompt("x", "warm")
    [request] = build_requests([prompt], lm)
    assert request == ScoringRequest(
        context_ids=tuple(lm.tokenizer(prompt.context())["input_ids"]),
        continuation_ids=tuple(tuple(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in prompt.continuations),
        demo_ids=(),
        dropped_demos=0,
        instruction="Rate the reviews.\n\n",
    )


def test_auto_batch_size_halves_on_out_of_memory_and_keeps_the_numbers(lm: HFBackend, monkeypatch) -> None:
    import harness.engine.hf.backend as hf_backend

    prompts = [_prompt(f"q{i}", q, demos=("a delight",)) for i, q in enumerate(["dull", "warm", "fine", "ok", "bad"])]
    requests = build_requests(prompts, lm)
    reference, _ = score_requests(lm, requests, batch_size=1, progress=False)
    real_score_batch = hf_backend.score_batch
    tried: list[int] = []

    def fits_two_requests(*args):
        tried.append(len(args[-1]))
        if len(args[-1]) > 2:
            raise torch.OutOfMemoryError("pretend the accelerator is full")
        return real_score_batch(*args)

    monkeypatch.setattr(hf_backend, "score_batch", fits_two_requests)
    scores, _ = score_requests(lm, requests, batch_size=None, progress=False)  # the backend's budget: all five at once
    fitting = next(i for i, size in enumerate(tried) if size <= 2)  # halved until batches of two fit
    assert tried[0] == 5 and sorted(tried[:fitting], reverse=True) == tried[:fitting]
    assert all(size <= 2 for size in tried[fitting:]) and sum(tried[fitting:]) == 5
    for got, want in zip(scores, reference):
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    with pytest.raises(HarnessError, match=r"out of memory with 5 requests at once \(8 rows\); set a smaller batch_size"):
        score_requests(lm, requests, batch_size=8, progress=False)  # a fixed batch size is the user's choice


@pytest.mark.parametrize("separator", ["\n\n", " ", ""])
def test_prefix_query_boundary_sees_the_same_tokens(lm: HFBackend, separator: str) -> None:
    """Whatever the separator, the cached path scores the very tokens of the whole-context encoding."""
    prompts = [
        Prompt(f"q{i}", "", tuple(f"Text: {d}{separator}" for d in ("fine", "grim")), ("d0", "d1"),
               f"Text: {q}", (" good", " not good"))
        for i, q in enumerate(["ok", "dull", "warmth"])
    ]
    requests = build_requests(prompts, lm)
    for prompt, request in zip(prompts, requests):
        assert request.context_ids == tuple(lm.tokenizer(prompt.context())["input_ids"])
    cached, _ = score_requests(lm, requests, batch_size=2, prefix_cache=True, progress=False)
    for prompt, scores in zip(prompts, cached):
        for label, continuation in enumerate(prompt.continuations):
            assert scores.logprobs[label] == pytest.approx(_reference_logprob(lm, prompt.context(), continuation), abs=1e-4)


def test_requests_with_their_own_instruction_share_it_with_their_group_only(lm: HFBackend) -> None:
    """0-shot MMLU: the instruction names the subject, so each subject's items share it; scores stay exact."""
    prompts = [
        Prompt(example_id=f"{subject}{i}", instruction=f"Questions about {subject}, with their answers.\n\n",
               demonstrations=(), demo_ids=(), query=f"Q: {question}\nA:", continuations=(" yes", " no way"))
        for subject in ("cats and dogs", "the history of tea") for i, question in enumerate(["Why?", "Is it so?"])]
    requests = build_requests(prompts, lm)
    scores, stats = score_requests(lm, requests, batch_size=4, progress=False)
    for prompt, score in zip(prompts, scores):
        for continuation, value in zip(prompt.continuations, score.logprobs):
            assert value == pytest.approx(_reference_logprob(lm, prompt.context(), continuation), abs=1e-4)
    _, one_group = score_requests(lm, [replace(r, instruction="") for r in requests], batch_size=4, progress=False)
    instruction_tokens = [len(lm.tokenizer(p.instruction)["input_ids"]) for p in prompts[::2]]
    # each subject's instruction runs once, not once per item (one group of all four shares almost nothing)
    assert stats.tokens_forwarded <= one_group.tokens_forwarded - min(instruction_tokens) + 4


def test_whole_rows_are_chosen_by_token_counts() -> None:
    from harness.engine.request import whole_rows

    assert whole_rows(12, [tuple(range(30)), tuple(range(28))])  # PIQA: a short question, two long solutions
    assert not whole_rows(25, [(1, 2, 3), (4, 5, 6), (7, 8), (9, 10, 11)])  # ARC: a longer question, short options
    assert not whole_rows(40, [(1,), (2,)])  # single-token labels: one pass over the query does it all
    assert whole_rows(40, [(1, 2, 3)])  # one continuation: always in its query's row


@pytest.mark.parametrize("layout", ["whole rows", "shared query"])
def test_both_layouts_give_the_full_recompute(lm: HFBackend, layout: str) -> None:
    """A request's continuations after a short query run as rows of their own; after a long one they share it.
    Both equal a plain full recompute, with the greedy flags, whatever the batch size."""
    from harness.engine.request import whole_rows

    long = (" not at all wonderful and truly excellent, warm and funny", " very bad, a dull mess and a waste of time")
    query = "good" if layout == "whole rows" else "a joyful film with a long title that goes on and on, " * 3
    prompts = [Prompt(example_id=f"q{i}", instruction="", demonstrations=(), demo_ids=(), query=f"{query} {i}",
                      continuations=long) for i in range(5)]
    requests = build_requests(prompts, lm)
    assert all(whole_rows(len(r.context_ids), r.continuation_ids) == (layout == "whole rows") for r in requests)
    for batch_size in (1, 2, 5):
        scores, _ = score_requests(lm, requests, batch_size=batch_size, prefix_cache=False, progress=False)
        for prompt, score in zip(prompts, scores):
            for label, continuation in enumerate(prompt.continuations):
                assert score.logprobs[label] == pytest.approx(_reference_logprob(lm, prompt.context(), continuation),
                                                              rel=1e-6, abs=1e-5)  # sums of ~20 fp32 terms
