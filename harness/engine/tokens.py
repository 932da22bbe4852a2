"""Token ids from a transformers tokenizer, as every backend that tokenizes on the harness's side makes them (the
transformers backend, and the OpenAI-compatible one, which sends the ids to its server): one rule, so the same
prompt is the same tokens whatever runs it."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def encode(tokenizer: PreTrainedTokenizerBase, add_bos: bool | None, text: str | list[str], *,
           is_context: bool) -> list[int] | list[list[int]]:
    """Token ids; only a context (never a continuation) may start with special tokens. add_bos None: the
    tokenizer's own default."""
    if not is_context or add_bos is False:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_bos is None:
        return tokenizer(text, add_special_tokens=True)["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id]
    return [bos + row for row in ids] if isinstance(text, list) else bos + ids


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Fills padded positions, which are always masked; GPT-2 has no pad token, so EOS (or 0) stands in."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def prefix_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """What a text scored from its first token is conditioned on (rolling log-likelihood): BOS, else EOS, as
    lm-evaluation-harness's prefix_token_id."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return pad_token_id(tokenizer)
