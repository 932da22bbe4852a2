"""The generation scorer: greedy decoding after the prompt, then the output parsed to a label.

For instruction-tuned models that answer rather than rank. Contexts are batched by length with
left padding, so every row's generated tokens start at the same column; results are restored to
request order. An output that names no label is recorded with prediction null and counts as wrong.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
from tqdm import tqdm

from harness.journal import Journal
from harness.models import LanguageModel
from harness.requests import ScoringRequest
from harness.scoring import ScoringStats, map_batches


@dataclass(frozen=True)
class Generation:
    text: str
    label: int | None  # index of the label the text names, None when it names none


def parse_label(text: str, verbalizers: Sequence[str]) -> int | None:
    """The label whose verbalizer the first line of `text` starts with, as a whole word, ignoring case.

    Longer verbalizers are tried first, so "very good" wins over "very" when both are labels.
    """
    answer = text.strip().split("\n", 1)[0].strip().lower()
    for index in sorted(range(len(verbalizers)), key=lambda i: -len(verbalizers[i].strip())):
        word = verbalizers[index].strip().lower()
        if re.match(re.escape(word) + r"(?!\w)", answer):
            return index
    return None


def generate_labels(
    lm: LanguageModel,
    requests: Sequence[ScoringRequest],
    verbalizers: Sequence[str],
    max_new_tokens: int,
    batch_size: int | None,
    progress: bool = True,
    journal: Journal | None = None,
) -> tuple[list[Generation], ScoringStats]:
    """Greedy continuations parsed to labels."""
    texts, stats = generate_texts(lm, requests, max_new_tokens, (), batch_size, progress, journal)
    return [Generation(text=text, label=parse_label(text, verbalizers)) for text in texts], stats


@torch.inference_mode()
def generate_texts(
    lm: LanguageModel,
    requests: Sequence[ScoringRequest],
    max_new_tokens: int,
    until: Sequence[str],
    batch_size: int | None,
    progress: bool = True,
    journal: Journal | None = None,
) -> tuple[list[str], ScoringStats]:
    """Greedy continuations of each request's context, up to max_new_tokens, the end-of-sequence token or (once
    every row of a batch has one) a stop string of `until`; the text is cut before the first stop string, as
    lm-evaluation-harness's generate_until does. With a journal, batches finished by an earlier process are
    reused (as in harness/scoring.py)."""
    start = time.perf_counter()
    done = journal.results if journal is not None else {}
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context_ids))
    outputs: dict[int, tuple[str, int]] = {index: (text, count) for index, (text, count) in done.items()}
    with tqdm(total=len(requests), initial=len(done), unit="ex", desc="generating", disable=not progress,
              dynamic_ncols=True) as bar:
        generate = partial(_generate_batch, lm, requests, max_new_tokens, tuple(until))
        for batch, texts in map_batches([i for i in order if i not in done], batch_size, lm.device, generate):
            if journal is not None:
                journal.record(batch, [list(pair) for pair in texts], sum(count for _, count in texts))
            outputs.update(zip(batch, texts))
            bar.update(len(batch))
    texts = [cut_at_stop(outputs[index][0], until) for index in range(len(requests))]
    generated_tokens = sum(count for _, count in outputs.values())
    context_tokens = sum(len(r.context_ids) for r in requests)
    stats = ScoringStats(context_tokens + generated_tokens, context_tokens + generated_tokens, time.perf_counter() - start)
    return texts, stats


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string."""
    for stop in until:
        text = text.split(stop, 1)[0]
    return text


def _generate_batch(
    lm: LanguageModel, requests: Sequence[ScoringRequest], max_new_tokens: int, until: tuple[str, ...],
    batch: Sequence[int],
) -> list[tuple[str, int]]:
    """Greedy continuations of the batch's contexts (left-padded), as (text, number of new tokens)."""
    width = max(len(requests[i].context_ids) for i in batch)
    input_ids = torch.full((len(batch), width), lm.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, index in enumerate(batch):
        ids = requests[index].context_ids
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    stopping = {"stop_strings": list(until), "tokenizer": lm.tokenizer} if until else {}
    output = lm.model.generate(
        input_ids=input_ids.to(lm.device), attention_mask=attention_mask.to(lm.device),
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=lm.pad_token_id, **stopping,
    )
    texts = []
    for row in range(len(batch)):
        new_tokens = output[row, width:].tolist()
        if lm.tokenizer.eos_token_id in new_tokens:
            new_tokens = new_tokens[: new_tokens.index(lm.tokenizer.eos_token_id)]
        texts.append((lm.tokenizer.decode(new_tokens, skip_special_tokens=True), len(new_tokens)))
    return texts
