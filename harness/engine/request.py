"""Prompts -> scoring requests: token ids, with the context-window policy applied.

Policy when a prompt does not fit the model's context window: drop demonstrations, oldest
(farthest from the query) first, until context + longest continuation fits; the number
dropped is recorded per example. A test input that does not fit even with no
demonstrations is an error: it is never cut silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from harness.errors import HarnessError
from harness.inputs.prompts import Prompt

if TYPE_CHECKING:
    from harness.engine.backend import Backend


@dataclass(frozen=True)
class ScoringRequest:
    """Everything needed to score every label of one test example."""

    context_ids: tuple[int, ...]
    continuation_ids: tuple[tuple[int, ...], ...]  # per label
    demo_ids: tuple[str, ...]  # the demonstrations actually in the context
    dropped_demos: int
    instruction: str = ""  # the text before the demonstrations (MMLU's names the subject)
    # options scored after the model's prefix token alone (acc_mutual_info, harness/kinds/multiple_choice.py)
    unconditional: bool = False

    @property
    def prefix_group(self) -> tuple[object, ...]:
        """Requests with the same instruction and demonstrations share a prefix (harness/engine/scoring.py).
        Unconditional requests form a group of their own, so they never shorten the prefix of 0-shot items."""
        return (self.unconditional, self.instruction, *self.demo_ids)


def build_requests(prompts: Sequence[Prompt], lm: Backend, answer_tokens: int = 0) -> list[ScoringRequest]:
    """Token ids of every prompt; the context leaves room for the longest continuation and for
    `answer_tokens` (the generation scorer's new tokens: a generation request, whose context stays as it is)."""
    if not prompts:
        return []
    continuation_cache: dict[str, tuple[int, ...]] = {}
    scoring = answer_tokens == 0
    texts = [scored_texts(prompt, lm) if scoring else (context_text(prompt, lm), prompt.continuations)
             for prompt in prompts]
    contexts = lm.encode([context for context, _ in texts], is_context=True)
    requests = []
    for prompt, context_ids, (_, continuation_texts) in zip(prompts, contexts, texts):
        continuations = []
        for text in continuation_texts:
            if text not in continuation_cache:
                continuation_cache[text] = tuple(lm.encode(text, is_context=False))
            continuations.append(continuation_cache[text])
        longest = max(answer_tokens, *(len(ids) for ids in continuations))
        dropped = 0
        while len(context_ids) + longest > lm.token_window:
            dropped += 1
            if dropped > len(prompt.demonstrations):
                raise HarnessError(
                    f"example {prompt.example_id} needs {len(context_ids) + longest} tokens without demonstrations, "
                    f"more than the context window of {lm.name} ({lm.token_window})"
                )
            context = scored_texts(prompt, lm, dropped)[0] if scoring else context_text(prompt, lm, dropped)
            context_ids = lm.encode(context, is_context=True)
        requests.append(
            ScoringRequest(
                context_ids=tuple(context_ids),
                continuation_ids=tuple(continuations),
                demo_ids=prompt.demo_ids[dropped:],
                dropped_demos=dropped,
                instruction=prompt.instruction,
            )
        )
    return requests


def scored_texts(prompt: Prompt, lm: Backend, dropped_demos: int = 0) -> tuple[str, tuple[str, ...]]:
    """The context and the continuations as scored. A context that ends in whitespace (a chat template's generation
    prompt: "<|im_start|>assistant\n") gives it to every continuation, as lm-evaluation-harness 0.4.13 does
    (`_encode_pair`), so the same tokens are scored; plain prompts end without it (their query is cut before it)."""
    context = context_text(prompt, lm, dropped_demos)
    stripped = context.rstrip()
    if stripped == context:
        return context, prompt.continuations
    return stripped, tuple(context[len(stripped):] + continuation for continuation in prompt.continuations)


def context_text(prompt: Prompt, lm: Backend, dropped_demos: int = 0) -> str:
    """The text before the answer: the plain prompt, or its messages through the model's chat template."""
    if prompt.chat is None:
        return prompt.context(dropped_demos)
    return lm.render_chat(prompt.messages(dropped_demos), prompt.chat)


def shared_prefix_length(contexts: Sequence[tuple[int, ...]]) -> int:
    """Longest common token prefix, leaving each context at least its last token.

    The last context token must run with the query: its output predicts the first label token.
    """
    first = contexts[0]
    limit = min(len(context) for context in contexts) - 1
    length = 0
    while length < limit and all(context[length] == first[length] for context in contexts):
        length += 1
    return length


def whole_rows(query_length: int, continuations: Sequence[tuple[int, ...]]) -> bool:
    """Whether a request's continuations run each in a row of its own, after a copy of its query (a plain forward
    pass per continuation: PIQA's short question before two long solutions), rather than after one run of the
    query (a second pass over copies of its keys and values, one row per distinct stem: the options of ARC and
    HellaSwag after a longer context). Both are exact. Whole rows cost the query's tokens again for every
    continuation but one; the second pass costs its stems and about a quarter of them again in overhead (measured
    on 100 items each, batch 8: PIQA, where the repeated query is a fifth of the stems, took the same time either
    way; HellaSwag, where it is about four fifths, took 46% longer in whole rows). A single continuation always
    runs in its query's row."""
    if len(continuations) < 2:
        return True
    stems = sum(len(ids) - 1 for ids in set(continuations))
    return 4 * (len(continuations) - 1) * query_length <= stems
