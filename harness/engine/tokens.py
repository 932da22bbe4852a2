"""Token ids from a transformers tokenizer, as every backend that tokenizes on the harness's side makes them (the
transformers backend, and the vLLM and OpenAI-compatible ones, which send the ids to their engine): one rule, and
one chat template rendering, so the same prompt is the same tokens whatever runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2
from transformers import PreTrainedTokenizerBase

from harness.engine.backend import Backend
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.inputs.prompts import ChatSettings


def encode(tokenizer: PreTrainedTokenizerBase, add_bos: bool | None, text: str | list[str], *,
           is_context: bool) -> list[int] | list[list[int]]:
    """Token ids; only a context (never a continuation) may start with special tokens. add_bos None: the
    tokenizer's own default, except for a text that starts with the BOS token already (a chat template that writes
    it, as Gemma's), which gets no second one (as lm-evaluation-harness)."""
    if not is_context or add_bos is False:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_bos is None:
        bos = tokenizer.bos_token
        if bos and any(one.startswith(bos) for one in ([text] if isinstance(text, str) else text)):
            if isinstance(text, str):
                return tokenizer(text, add_special_tokens=not text.startswith(bos))["input_ids"]
            return [tokenizer(one, add_special_tokens=not one.startswith(bos))["input_ids"] for one in text]
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


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], chat: ChatSettings) -> str:
    """The messages through the tokenizer's chat template: a generation prompt after them, or, with gen_prefix, the
    final assistant turn continued. A template that rejects a system role gets the messages without it, as
    lm-evaluation-harness 0.4.13 does."""
    options = {"tokenize": False, "add_generation_prompt": not chat.gen_prefix,
               "continue_final_message": bool(chat.gen_prefix)}
    if chat.template_name is not None:
        options["chat_template"] = chat.template_name
    try:
        return tokenizer.apply_chat_template(messages, **options)
    except jinja2.TemplateError:
        without_system = [message for message in messages if message["role"] != "system"]
        try:
            return tokenizer.apply_chat_template(without_system, **options)
        except jinja2.TemplateError as error:
            raise HarnessError(f"the model's chat template refused the prompt: {error}") from None


def chat_template_names(tokenizer: PreTrainedTokenizerBase) -> list[str] | None:
    """The tokenizer's chat templates by name ("default" for a single one), or None when it has none."""
    template = tokenizer.chat_template
    if not template:
        return None
    return sorted(template) if isinstance(template, dict) else ["default"]


class TokenizedBackend(Backend):
    """A backend whose requests the harness tokenizes with the model's transformers tokenizer (`tokenizer`, and
    `add_bos`: None for the tokenizer's own default)."""

    tokenizer: PreTrainedTokenizerBase
    add_bos: bool | None

    def encode(self, text: str | list[str], *, is_context: bool) -> list[int] | list[list[int]]:
        return encode(self.tokenizer, self.add_bos, text, is_context=is_context)

    @property
    def prefix_token_id(self) -> int:
        return prefix_token_id(self.tokenizer)

    @property
    def vocabulary_size(self) -> int:
        return len(self.tokenizer)

    def render_chat(self, messages: list[dict[str, str]], chat: ChatSettings) -> str:
        return render_chat(self.tokenizer, messages, chat)

    def chat_template_names(self) -> list[str] | None:
        return chat_template_names(self.tokenizer)
