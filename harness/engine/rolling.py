"""Documents -> rolling windows -> one log-likelihood per document (perplexity tasks, `kind: perplexity`).

The second request type of the model interface beside the log-likelihood of continuations: the whole
text's log-likelihood, token by token, as lm-evaluation-harness's loglikelihood_rolling (wikitext). A
document is encoded without special tokens and cut into disjoint windows of at most the model's context
window of predicted tokens. The first window is conditioned on one prefix token (BOS, else EOS: the
model's prefix_token_id), each later full window on the one token before it, and the last, shorter one
on as many tokens before it as fill the window. Every window is a scoring request with one continuation,
scored by the backend's loglikelihood_rolling through harness/engine/scoring.py, so the batching, journal and
resume of every other run apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from harness.engine.backend import Backend
from harness.engine.journal import Journal
from harness.engine.request import ScoringRequest
from harness.engine.scoring import ScoringStats, score_requests

# Log-probabilities of a window are computed for every position at once (positions x vocabulary floats). With
# batch_size=auto, a batch holds at most this many of them: 2^27 floats, 512 MiB (SmolLM2's 49,152-token
# vocabulary: about 2,700 positions, one 2,048-token window plus change).
AUTO_BATCH_FLOATS = 2**27


@dataclass(frozen=True)
class DocumentScores:
    loglikelihoods: list[float]  # per document: the sum over its tokens
    tokens: list[int]  # per document: its tokens, every one predicted once
    windows: list[int]  # per document: how many windows it took
    requests: list[ScoringRequest]  # every window of every document, in order
    stats: ScoringStats


def rolling_windows(tokens: Sequence[int], prefix_token: int, window: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(context, continuation) pairs whose continuations are the document's tokens, each once, in order; a
    context and its continuation but the last token fill at most `window` positions."""
    tokens = list(tokens)
    pairs: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    start = 0
    while start < len(tokens):
        end = min(start + window, len(tokens))
        # the window's inputs are the `window` positions before `end` (or the prefix token and the start)
        inputs = [prefix_token, *tokens[: end - 1]] if start == 0 else tokens[max(0, end - 1 - window) : end - 1]
        predicted = end - start
        context = inputs[: len(inputs) - (predicted - 1)]
        pairs.append((tuple(context), tuple(tokens[start:end])))
        start = end
    return pairs


def score_documents(lm: Backend, texts: Sequence[str], batch_size: int | None, progress: bool,
                    open_journal: Callable[[Sequence[ScoringRequest]], Journal] | None = None) -> DocumentScores:
    """The log-likelihood of each text (the sum over its windows)."""
    encoded = lm.encode(list(texts), is_context=False) if texts else []
    requests: list[ScoringRequest] = []
    windows: list[int] = []
    for ids in encoded:
        pairs = rolling_windows(ids, lm.prefix_token_id, lm.token_window)
        requests.extend(ScoringRequest(context_ids=context, continuation_ids=(continuation,), demo_ids=(),
                                       dropped_demos=0) for context, continuation in pairs)
        windows.append(len(pairs))
    journal: Journal | None = open_journal(requests) if open_journal is not None else None
    if batch_size is None and requests:
        widest = max(len(request.context_ids) + len(request.continuation_ids[0]) for request in requests)
        batch_size = max(1, AUTO_BATCH_FLOATS // (widest * lm.vocabulary_size))
    scores, stats = score_requests(lm, requests, batch_size, prefix_cache=False, progress=progress, journal=journal,
                                   rolling=True)
    loglikelihoods, position = [], 0
    for count in windows:
        loglikelihoods.append(sum(score.logprobs[0] for score in scores[position:position + count]))
        position += count
    return DocumentScores(loglikelihoods=loglikelihoods, tokens=[len(ids) for ids in encoded], windows=windows,
                          requests=requests, stats=stats)
