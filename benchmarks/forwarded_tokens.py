"""Tokens each tool forwards for the same items: the work behind benchmarks/leaderboard_vs_lmeval.py's speed-ups.

Reads a --workdir of leaderboard_vs_lmeval.py (lm-evaluation-harness's per-sample logs and the harness's
records) and counts, per task and shot count:

- lm-evaluation-harness 0.4.13: per request, context + continuation - 1 tokens (its _encode_pair: trailing
  context whitespace moved onto the continuation, the continuation's ids taken from the joint encoding), and
  requests that share everything but their last token once (its one-token-continuation grouping);
- the harness: `cost.tokens_forwarded` of its record (shared prefix once, each context once, each option's
  own tokens).

Usage:
    python benchmarks/forwarded_tokens.py --workdir /tmp/lb2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ensure_model
from transformers import AutoTokenizer


def lmeval_tokens(sample_files: list[Path], encode) -> int:
    rows: dict[tuple[int, ...], int] = {}
    for path in sample_files:
        for line in path.read_text().splitlines():
            for argument in json.loads(line)["arguments"].values():
                context, continuation = argument["arg_0"], argument["arg_1"]
                spaces = len(context) - len(context.rstrip())
                if spaces:
                    context, continuation = context[:-spaces], context[-spaces:] + continuation
                whole = encode(context + continuation)
                rows[tuple(whole[:-1])] = len(whole) - 1  # one row per distinct input, as its grouping runs
    return sum(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_model()))

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    print("| task | shots | lm-eval tokens | harness tokens | ratio |\n| --- | ---: | ---: | ---: | ---: |")
    totals: dict[int, list[int]] = {}
    for run in sorted(args.workdir.glob("harness_*shot")):
        task, shots_text = run.name.removeprefix("harness_").rsplit("_", 1)
        shots = int(shots_text.removesuffix("shot"))
        (metrics,) = run.glob("*/metrics.json")
        ours = json.loads(metrics.read_text())["cost"]["tokens_forwarded"]
        samples = sorted((args.workdir / f"lmeval_out_{task}_{shots}shot").rglob("samples_*.jsonl"))
        theirs = lmeval_tokens(samples, encode)
        total = totals.setdefault(shots, [0, 0])
        total[0], total[1] = total[0] + theirs, total[1] + ours
        print(f"| {task} | {shots} | {theirs:,} | {ours:,} | {theirs / ours:.2f}x |")
    for shots, (theirs, ours) in sorted(totals.items()):
        print(f"| all | {shots} | {theirs:,} | {ours:,} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
