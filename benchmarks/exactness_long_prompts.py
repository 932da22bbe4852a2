"""Shared-prefix scores against a plain full recompute, on a real model, with prompts longer than its window.

Gemma 3 270M attends to the last 512 positions in five of every six layers. This builds k-shot prompts
for the first N test items of a task (demonstrations drawn per item as a run draws them, so prefixes are
shared where items share demonstrations: demos=first_n), scores every label with the harness's scorer at
two batch sizes and with the prefix cache off, and compares each with one full forward pass over
context + continuation (no cache, no padding). Prints the prompt lengths, the largest |difference| and
whether the predictions agree.

Usage:
    python benchmarks/exactness_long_prompts.py [--model gemma3-270m] [--task sentiment] [--shots 32] [--limit 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness.engine.hf.loading import load_backend  # noqa: E402
from harness.engine.request import build_requests  # noqa: E402
from harness.engine.scoring import score_requests  # noqa: E402
from harness.inputs.prompts import build_prompt  # noqa: E402
from harness.runs.plan import choose_inputs, plan_run  # noqa: E402
from helpers import compose  # noqa: E402  (the CLI's config composition, in this process)


def full_recompute(lm, context: tuple[int, ...], continuation: tuple[int, ...]) -> float:
    ids = torch.tensor([list(context) + list(continuation)])
    with torch.inference_mode():
        logprobs = torch.log_softmax(lm.model(ids).logits[0].float(), dim=-1)
    return sum(logprobs[len(context) - 1 + i, token].item() for i, token in enumerate(continuation))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--shots", type=int, default=32)
    parser.add_argument("--limit", type=int, default=16)
    args = parser.parse_args()
    config = compose(f"model={args.model}", f"task={args.task}", f"shots={args.shots}", f"limit={args.limit}",
                     "demos=first_n", "output_dir=/tmp/exactness")
    plan = plan_run(config)
    selection = choose_inputs(plan)
    lm = load_backend(config.model, "cpu")
    prompts = [build_prompt(plan.template, shown, example) for shown, example in zip(selection.demonstrations, selection.examples)]
    requests = build_requests(prompts, lm)
    lengths = [len(request.context_ids) for request in requests]
    print(f"{args.model}: sliding window {lm.sliding_window}; {len(requests)} prompts of {min(lengths)}-{max(lengths)} "
          f"tokens, {sum(map(len, requests[0].continuation_ids))} continuation tokens over the labels")
    reference = [[full_recompute(lm, request.context_ids, ids) for ids in request.continuation_ids]
                 for request in requests]
    for batch_size, prefix_cache in ((1, True), (8, True), (8, False)):
        scores, stats = score_requests(lm, requests, batch_size=batch_size, prefix_cache=prefix_cache, progress=False)
        worst = max(abs(got - want) for score, ref in zip(scores, reference) for got, want in zip(score.logprobs, ref))
        same = all(max(range(len(ref)), key=ref.__getitem__) == max(range(len(ref)), key=score.logprobs.__getitem__)
                   for score, ref in zip(scores, reference))
        print(f"batch_size={batch_size} prefix_cache={prefix_cache}: max |score - full recompute| = {worst:.2e}, "
              f"same predictions: {same}, tokens forwarded {stats.tokens_forwarded:,}, {stats.seconds:.1f} s")


if __name__ == "__main__":
    main()
