"""Tokens each tool forwards for the same items: the work behind benchmarks/leaderboard_vs_lmeval.py's speed-ups.

Reads a --workdir of leaderboard_vs_lmeval.py (lm-evaluation-harness's per-sample logs and the harness's
records) and counts, per task and shot count:

- lm-evaluation-harness 0.4.13: per request, context + continuation - 1 tokens (its _encode_pair: trailing
  context whitespace moved onto the continuation, the continuation's ids taken from the joint encoding), and
  requests that share everything but their last token once (its one-token-continuation grouping);
- the harness: `cost.tokens_forwarded` of its record (shared prefix once, each context once, each option's
  own tokens).

and the most any exact scorer could gain from computing less than lm-evaluation-harness does
("compute bound"): its matmul work (every row of a batch of 8 padded to the batch's longest, as its
longest-first batches run; per position the decoder's weights, causal attention, and the vocabulary
projection, which it applies at every position) over the least the harness's own token count allows (its
forwarded tokens through the decoder's weights, the vocabulary projection only where an option token is
scored, no attention at all). Wall-clock speed-ups also carry each tool's start-up, which pulls them
towards 1 as the items grow.

Usage:
    python benchmarks/forwarded_tokens.py --workdir /tmp/lb2
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from common import ensure_model
from transformers import AutoTokenizer


@dataclass(frozen=True)
class Shape:
    """The matmul work of one forward position of a decoder-only model, in multiply-adds."""

    decoder: int  # the layers' weight matrices
    vocabulary: int  # hidden size x vocabulary: the output projection
    attention: int  # layers x attention width: per (query, key) pair, the score and the weighted sum each

    @classmethod
    def of(cls, model_dir: Path) -> Shape:
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
        decoder = sum(p.numel() for name, p in model.named_parameters() if ".layers." in name and p.dim() == 2)
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(decoder, config.hidden_size * config.vocab_size,
                   config.num_hidden_layers * config.num_attention_heads * head_dim)


def lmeval_rows(sample_files: list[Path], encode) -> tuple[list[int], int]:
    """The length of every row lm-evaluation-harness forwards, and how many distinct positions any scorer must
    project onto the vocabulary (one per continuation token, shared by options that differ only after it)."""
    rows: dict[tuple[int, ...], int] = {}
    scored: set[tuple[int, ...]] = set()
    for path in sample_files:
        for line in path.read_text().splitlines():
            for argument in json.loads(line)["arguments"].values():
                context, continuation = argument["arg_0"], argument["arg_1"]
                spaces = len(context) - len(context.rstrip())
                if spaces:
                    context, continuation = context[:-spaces], context[-spaces:] + continuation
                whole = encode(context + continuation)
                rows[tuple(whole[:-1])] = len(whole) - 1  # one row per distinct input, as its grouping runs
                scored.update(tuple(whole[:end]) for end in range(len(encode(context)), len(whole)))
    return list(rows.values()), len(scored)


def lmeval_work(rows: list[int], shape: Shape, batch_size: int = 8) -> int:
    """Multiply-adds of lm-evaluation-harness's batches: longest first, each padded to its longest row."""
    ordered = sorted(rows, reverse=True)
    work = 0
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start:start + batch_size]
        width = batch[0]
        per_row = width * (shape.decoder + shape.vocabulary) + shape.attention * width * (width + 1) // 2 * 2
        work += len(batch) * per_row
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_model()))

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    shape = Shape.of(ensure_model())
    print("| task | shots | lm-eval tokens | harness tokens | ratio | compute bound |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    totals: dict[int, list[int]] = {}
    for run in sorted(args.workdir.glob("harness_*shot")):
        task, shots_text = run.name.removeprefix("harness_").rsplit("_", 1)
        shots = int(shots_text.removesuffix("shot"))
        (metrics,) = run.glob("*/metrics.json")
        ours = json.loads(metrics.read_text())["cost"]["tokens_forwarded"]
        samples = sorted((args.workdir / f"lmeval_out_{task}_{shots}shot").rglob("samples_*.jsonl"))
        rows, scored = lmeval_rows(samples, encode)
        theirs, their_work = sum(rows), lmeval_work(rows, shape)
        least_work = ours * shape.decoder + scored * shape.vocabulary
        total = totals.setdefault(shots, [0, 0, 0, 0])
        for i, value in enumerate((theirs, ours, their_work, least_work)):
            total[i] += value
        print(f"| {task} | {shots} | {theirs:,} | {ours:,} | {theirs / ours:.2f}x | {their_work / least_work:.2f}x |")
    for shots, (theirs, ours, their_work, least_work) in sorted(totals.items()):
        print(f"| all | {shots} | {theirs:,} | {ours:,} | {theirs / ours:.2f}x | {their_work / least_work:.2f}x |")


if __name__ == "__main__":
    main()
