"""How close the engine comes to the bare model on every task shape: the forward passes of real runs, replayed as
plain model calls of the same shapes.

    python benchmarks/efficiency.py                                  # the shapes below, 200 items each
    python benchmarks/efficiency.py --shapes piqa:0 arc_easy:0 --limit 100
    python benchmarks/efficiency.py --settings batch_size=auto  # the token budget, not batches of 8 requests

Each shape (task:shots) runs in this process (SmolLM2-135M-Instruct on the CPU, loaded once) with every forward
pass of the transformers backend recorded: its rows, its width (the longest row: padding included), the real
tokens, the cached columns it attends to, the positions whose logits are kept, and its seconds. Each pass is then
replayed on the bare model with random token ids of the same shape (a cache of random keys and values of the
same length where the pass had one), best of two. Printed per shape:

- tokens: real tokens forwarded; real/padded: their share of the positions the passes ran (the rest is padding);
- engine tok/s: real tokens per second of the run's scoring time (everything: requests, passes, scores);
- bare tok/s: real tokens per second of the replayed passes;
- efficiency: engine tok/s over bare tok/s (the issue's target: >= 85%);
- bare packed tok/s and efficiency packed: the same against the bare model running each pass's real tokens in
  rows of their mean width, with no padding (what the engine's row layout and batching leave on the table);
- in passes: the share of the scoring time spent in the forward passes themselves (the rest is the engine's own
  work around them: requests, scores, the journal).

Run nothing else meanwhile: the figures are seconds on a shared CPU.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import MODEL, REPO, commit

sys.path.insert(0, str(REPO / "tests"))

DEFAULT_SHAPES = ["sentiment:0", "sentiment:8", "arc_easy:0", "arc_easy:5", "piqa:0", "piqa:5", "hellaswag:0",
                  "hellaswag:5", "social_iqa:0", "social_iqa:5", "winogrande:0", "winogrande:5", "mmlu:0", "mmlu:5",
                  "lambada_openai:0", "triviaqa:0"]


@dataclass
class Pass:
    rows: int
    width: int
    real: int
    cached: int
    kept: int
    seconds: float


@dataclass
class Recorder:
    passes: list[Pass] = field(default_factory=list)


def record_passes(recorder: Recorder) -> None:
    """Wrap the backend's forward passes (harness/engine/hf/forward.py, as the scorer and the decoder call them):
    the rows after a cache, and a group's shared prefix."""
    import harness.engine.hf.backend as backend
    import harness.engine.hf.decoder as decoder
    import harness.engine.hf.scorer as scorer

    real_forward, real_prefix = scorer.forward_rows, backend.encode_prefix

    def recorded_prefix(lm, ids):
        started = time.perf_counter()
        result = real_prefix(lm, ids)
        if ids:
            recorder.passes.append(Pass(rows=1, width=len(ids), real=len(ids), cached=0, kept=1,
                                        seconds=time.perf_counter() - started))
        return result

    def recorded(lm, cache, inputs, first_kept, span, cache_mask=None):
        started = time.perf_counter()
        result = real_forward(lm, cache, inputs, first_kept, span, cache_mask)
        recorder.passes.append(Pass(rows=len(inputs), width=max(map(len, inputs)), real=sum(map(len, inputs)),
                                    cached=0 if cache is None else cache.get_seq_length(), kept=span,
                                    seconds=time.perf_counter() - started))
        return result

    scorer.forward_rows = recorded
    decoder.forward_rows = recorded
    backend.encode_prefix = decoder.encode_prefix = recorded_prefix


def replay(lm, passes: list[Pass], packed: bool = False) -> float:
    """Seconds the bare model takes for the same passes (best of two each); packed: each pass's real tokens in rows
    of its mean real width, as if no row were padded."""
    from transformers import DynamicCache

    config = lm.model.config
    heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    total = 0.0
    with torch.inference_mode():
        for step in passes:
            width = -(-step.real // step.rows) if packed else step.width
            ids = torch.randint(0, lm.vocabulary_size, (step.rows, width))
            best = float("inf")
            for _ in range(2):
                cache = None
                if step.cached:
                    cache = DynamicCache(ddp_cache_data=[
                        (torch.randn(step.rows, heads, step.cached, head_dim),
                         torch.randn(step.rows, heads, step.cached, head_dim))
                        for _ in range(config.num_hidden_layers)])
                started = time.perf_counter()
                lm.model(input_ids=ids, cache=cache, use_cache=cache is not None,
                         logits_to_keep=max(1, min(step.kept, width)))
                best = min(best, time.perf_counter() - started)
            total += best
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="task:shots")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--settings", nargs="*", default=[], help="more settings of every run, e.g. batch_size=8")
    arguments = parser.parse_args()
    from harness.engine.backend import backend_spec
    from harness.runs.run import run
    from helpers import compose

    recorder = Recorder()
    record_passes(recorder)
    work = Path(tempfile.mkdtemp(prefix="efficiency-"))
    rows = []
    for shape in arguments.shapes:
        task, _, shots = shape.partition(":")
        config = compose(f"task={task}", f"model={MODEL}", f"shots={shots or 0}", f"limit={arguments.limit}",
                         "device=cpu", f"output_dir={work}", "rerun=true", *arguments.settings)
        lm = backend_spec("hf").load(config.model, "cpu", reuse=True)  # loaded once, outside the timings
        recorder.passes.clear()
        record = run(config, progress=False).record
        passes = list(recorder.passes)
        real, padded = sum(p.real for p in passes), sum(p.rows * p.width for p in passes)
        forward_seconds = sum(p.seconds for p in passes)
        bare_seconds, packed_seconds = replay(lm, passes), replay(lm, passes, packed=True)
        engine_rate = real / record.cost.scoring_time_s
        bare_rate, packed_rate = real / bare_seconds, real / packed_seconds
        rows.append((shape, record.n, len(passes), real, real / padded, record.cost.scoring_time_s, engine_rate,
                     bare_rate, engine_rate / bare_rate, packed_rate, engine_rate / packed_rate,
                     forward_seconds / record.cost.scoring_time_s))
        print(f"{shape}: {rows[-1]}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{MODEL} on the CPU, {torch.get_num_threads()} threads, harness at {commit()}, settings: "
          f"{' '.join(arguments.settings) or 'the defaults'}")
    print("| shape | items | passes | tokens | real/padded | scoring s | engine tok/s | bare tok/s | efficiency "
          "| bare packed tok/s | efficiency packed | in passes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (shape, items, count, real, share, seconds, engine_rate, bare_rate, efficiency, packed_rate, packed_efficiency,
         in_passes) in rows:
        print(f"| {shape} | {items} | {count} | {real:,} | {share:.0%} | {seconds:.1f} | {engine_rate:.0f} | "
              f"{bare_rate:.0f} | {efficiency:.0%} | {packed_rate:.0f} | {packed_efficiency:.0%} | {in_passes:.0%} |")


if __name__ == "__main__":
    main()
