"""What a run will do, decided before any model is loaded (and without importing torch).

plan_run checks the settings, loads the template and the data, fingerprints every input and
derives the run key and directory; choose_inputs picks the test items' demonstrations and the
training set; start_run_dir makes sure the output can be written. Every mistake a user can make
without the model fails here, in one line, before minutes of loading, training or scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from harness.config import RETRIEVAL_DEMOS, Device, ModelConfig, RunConfig, Scorer, TaskConfig
from harness.engine.backend import backend_spec
from harness.engine.hf.fingerprint import chat_templates_at_planning
from harness.errors import HarnessError
from harness.files import write_text_atomic
from harness.finetune.method import learning_method
from harness.inputs.data import Example, load_split
from harness.inputs.demos import demonstrations_per_example
from harness.inputs.expressions import compile_pattern
from harness.inputs.prompts import ChatSettings, Template, load_template
from harness.inputs.registry import task_files, template_files
from harness.kinds.base import Answers, TaskKind, task_kind
from harness.metrics.registry import check_available, metric
from harness.runs.distributed import launched_processes
from harness.runs.fingerprint import examples_digest
from harness.runs.records import CONFIG_FILE, Inputs, RunRecord, run_dir_name, run_key
from harness.sources.digests import file_digest

SUBSAMPLE_SEED = 0  # independent of the run seed, so every run scores the same test items


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    resolved: dict[str, Any]  # the config as config.yaml holds it
    template: Template
    labels: list[str]
    examples: list[Example]  # the test items scored, in order (after subsample and limit)
    pool: list[Example]  # the demonstration split (empty at 0 shots)
    inputs: Inputs
    key: str
    run_dir: Path

    @property
    def finetuning(self) -> bool:
        return learning_method(self.config.method.name).trains


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    record: RunRecord
    reused: bool = False  # the record was complete already, nothing ran


@dataclass(frozen=True)
class Selection:
    examples: list[Example]  # the test items scored: the plan's, less a fine-tuning set drawn from the same split
    demonstrations: list[list[Example]]  # in each test item's prompt
    training_set: list[Example]  # fine-tuning: the one demonstration set the ICL run with this seed shows


def plan_run(config: RunConfig) -> RunPlan:
    task = config.task
    if config.template == "all":
        raise HarnessError("template=all stands for several runs: plan each of templates_to_run(config)")
    kind = task_kind(task.kind)
    trains = learning_method(config.method.name).trains
    # the key names what is used, not "the default"
    config = replace(config, template=config.template or task.default_template, demos=config.demos or task.default_demos,
                     # the seed's own value trains as the plain run does: the same run, the same key
                     train_seed=None if config.train_seed == config.seed and trains else config.train_seed)
    kind.check(config)  # first: what the task's kind rules out says more than a generic complaint about it
    check_task(config)
    check_settings(config)
    chat = check_chat(config)
    # a template is used at the default turns either way: the key names what is used
    config = replace(config, fewshot_as_multiturn=None if chat is None else chat.multiturn)
    template = replace(load_template(task, config.template, config.label_words), chat=chat)
    kind.check_template(template, config)
    check_metrics(kind, task)
    evaluation = load_split(task, task.eval_split)
    examples = evaluation
    if config.subsample is not None:
        if config.subsample > len(evaluation):
            raise HarnessError(f"subsample={config.subsample} but the {task.eval_split} split of task '{task.name}' "
                               f"has {len(evaluation)} examples")
        chosen = np.random.default_rng(SUBSAMPLE_SEED).choice(len(evaluation), size=config.subsample, replace=False)
        examples = [evaluation[i] for i in sorted(chosen)]
    if config.limit is not None:
        examples = examples[: config.limit]
    pool = load_split(task, task.demo_split) if config.shots else []
    task_file = task_files().get(task.name)
    inputs = Inputs(
        task_file=file_digest(task_file) if task_file else None,
        template_file=template.file_sha256,
        eval_data=examples_digest(evaluation),
        demo_data=examples_digest(pool) if config.shots else None,
        model=backend_spec(config.model.backend).model_fingerprint(config.model),
    )
    resolved = OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)
    key = run_key(resolved, inputs)
    return RunPlan(config=config, resolved=resolved, template=template, labels=list(task.labels), examples=examples,
                   pool=pool, inputs=inputs, key=key, run_dir=Path(config.output_dir) / run_dir_name(resolved, key))


def choose_inputs(plan: RunPlan) -> Selection:
    """Each test item's demonstrations. ICL shows them; fine-tuning trains on the run's one set (the very
    examples the ICL run with this seed shows) and shows its first eval_shots. When the demonstrations come
    from the evaluation split itself, a fine-tuned model is not scored on what it was trained on: those k
    items leave the evaluation (paired comparisons with ICL join on the items both scored)."""
    config = plan.config
    task = config.task
    same_split = task.demo_split == task.eval_split
    if not plan.finetuning:
        demonstrations = demonstrations_per_example(plan.examples, plan.pool, config.shots, config.seed, config.demos,
                                                    plan.labels, config.demo_ids, config.demo_order, config.retriever,
                                                    match=task.demos_match, exclude_self=same_split)
        return Selection(examples=plan.examples, demonstrations=demonstrations, training_set=[])
    [training_set] = demonstrations_per_example([plan.examples[0]], plan.pool, config.shots, config.seed, config.demos,
                                                plan.labels, config.demo_ids, config.demo_order, config.retriever,
                                                match=task.demos_match)
    trained = {example.id for example in training_set}
    examples = [example for example in plan.examples if not (same_split and example.id in trained)]
    if not examples:
        raise HarnessError(f"every test item is among the {config.shots} training examples: nothing left to score")
    return Selection(examples=examples, demonstrations=[training_set[: config.eval_shots]] * len(examples),
                     training_set=training_set)


def start_run_dir(plan: RunPlan) -> None:
    """Create the run directory and write config.yaml: an output that cannot be written fails now."""
    try:
        write_text_atomic(plan.run_dir / CONFIG_FILE, OmegaConf.to_yaml(plan.resolved))
    except OSError as error:
        raise HarnessError(f"cannot write the run record to {plan.run_dir} ({error.strerror or error}); "
                           "set output_dir to a writable directory") from None


def templates_to_run(config: RunConfig) -> list[str]:
    """template=all: every template of the task that suits the run (classification: channel templates for
    scorer=channel, the others otherwise)."""
    if config.template != "all":
        return [config.template or config.task.default_template]
    kind = task_kind(config.task.kind)
    names = [name for name in template_files(config.task.name)
             if kind.suits(load_template(config.task, name), config)]
    if not names:
        raise HarnessError(f"task '{config.task.name}' has no templates for scorer={config.scorer}")
    return names


def check_metrics(kind: TaskKind, task: TaskConfig) -> None:
    """The task's metrics are ones its kind can compute, and each is built in or on the hub (loaded now, before any
    scoring: an unknown name fails first, not last)."""
    allowed = kind.metric_names(task)
    if allowed is not None:
        unknown = sorted(set(task.metrics) - set(allowed))
        if unknown:
            raise HarnessError(f"a {kind.name} task's metrics are {', '.join(allowed)}; not {', '.join(unknown)}")
        return
    if kind.answers != Answers.options:
        refused = sorted(name for name in task.metrics if (spec := metric(name)) is not None and spec.needs_options)
        if refused:
            raise HarnessError(f"{', '.join(refused)}: metrics of multiple-choice tasks (kind: choice), whose items "
                               "bring their own options; not of a classification task")
    check_available(task.metrics)


def check_task(config: RunConfig) -> None:
    """What a task file says that cannot work, whatever its kind."""
    task = config.task
    patterns = {**{f"answer.filters.{name}.regex": rule.regex for name, rule in task.answer.filters.items()},
                **{f"answer.regexes_to_ignore[{i}]": regex for i, regex in enumerate(task.answer.regexes_to_ignore)}}
    for key, pattern in patterns.items():  # before minutes of generation, not after
        try:
            compile_pattern(pattern)
        except HarnessError as error:
            raise HarnessError(f"task '{task.name}': {key} {error}") from None
    for key in ("demos_match", "metrics_by", "units_field"):
        name = getattr(task, key)
        if name is not None and name not in task.fields:
            raise HarnessError(f"task '{task.name}': {key} names '{name}', which is not one of its fields "
                               f"({', '.join(task.fields)})")


def check_settings(config: RunConfig) -> None:
    """Settings that are wrong whatever the task and model (the config schema has rejected wrong types and
    values outside each setting's choices already)."""
    finetuning = learning_method(config.method.name).trains
    if config.shots < 0:
        raise HarnessError(f"shots must be >= 0, got {config.shots}")
    if config.seed < 0:
        raise HarnessError(f"seed must be >= 0, got {config.seed}")
    if config.train_seed is not None and not finetuning:
        raise HarnessError("train_seed applies to fine-tuning methods (icl trains nothing); seed picks the examples")
    if config.train_seed is not None and config.train_seed < 0:
        raise HarnessError(f"train_seed must be >= 0, got {config.train_seed}")
    if config.eval_shots and not finetuning:
        raise HarnessError("eval_shots applies to fine-tuning methods; for icl use shots")
    if not 0 <= config.eval_shots <= config.shots:
        raise HarnessError(f"eval_shots must be between 0 and shots ({config.shots}), got {config.eval_shots}")
    if config.demos in RETRIEVAL_DEMOS and finetuning:
        raise HarnessError(f"demos={config.demos} picks demonstrations per test example; "
                           "fine-tuning needs one training set (demos=random, balanced, first_n or ids)")
    backend = backend_spec(config.model.backend)
    if finetuning and not backend.trainable:
        if not backend.serves_trained:
            raise HarnessError(f"method={config.method.name} trains the model's weights; model.backend="
                               f"{config.model.backend} serves a model it cannot train (use model.backend=hf or "
                               "method=icl)")
        if not learning_method(config.method.name).merges:
            raise HarnessError(f"method={config.method.name} trains a soft prompt, which model.backend="
                               f"{config.model.backend} cannot load (it loads weights): use model.backend=hf")
    if launched_processes() > 1 and not backend_spec(config.model.backend).data_parallel:
        raise HarnessError(f"model.backend={config.model.backend} runs one engine that batches and places the model by "
                           "itself (model.tensor_parallel_size across GPUs): run it without accelerate launch")
    if finetuning and config.shots == 0:
        raise HarnessError(f"method={config.method.name} needs training examples: set shots > 0")
    if finetuning and (config.method.steps < 1 or config.method.learning_rate <= 0):
        raise HarnessError(f"method={config.method.name} needs method.steps >= 1 and method.learning_rate > 0")
    if config.max_new_tokens < 1:
        raise HarnessError(f"max_new_tokens must be >= 1, got {config.max_new_tokens}")
    if config.batch_size != "auto" and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise HarnessError(f"batch_size must be a positive integer or auto, got {config.batch_size!r}")
    if config.batch_tokens is not None and (config.batch_size != "auto" or config.batch_tokens < 1):
        raise HarnessError(f"batch_tokens is the token budget of batch_size=auto: a positive integer with batch_size=auto, "
                           f"got batch_tokens={config.batch_tokens!r} with batch_size={config.batch_size!r}")
    if config.model.max_length is not None and config.model.max_length < 1:
        raise HarnessError(f"model.max_length must be >= 1 (or null: the model's own context window), got "
                           f"{config.model.max_length}")
    for key in ("limit", "subsample"):
        if getattr(config, key) is not None and getattr(config, key) < 1:
            raise HarnessError(f"{key} must be >= 1, got {getattr(config, key)}")
    check_placement(config, finetuning)


def check_chat(config: RunConfig) -> ChatSettings | None:
    """chat_template and the settings that go with it, checked against the task and the model's tokenizer files
    before anything loads (where the files are here: else once the tokenizer is loaded, before any scoring)."""
    name = config.chat_template
    if name is None or name is False or (isinstance(name, str) and name.lower() in ("false", "none", "")):
        for setting in ("system_instruction", "gen_prefix"):
            if getattr(config, setting) is not None:
                raise HarnessError(f"{setting} is a chat setting: it applies with chat_template=true")
        if config.fewshot_as_multiturn:
            raise HarnessError("fewshot_as_multiturn=true needs chat_template=true: without a chat template there "
                               "are no turns")
        return None
    if not isinstance(name, (bool, str)):
        raise HarnessError(f"chat_template is true, false or the name of one of the tokenizer's templates, got {name!r}")
    kind = task_kind(config.task.kind)
    if not kind.template_answer:
        raise HarnessError(f"task '{config.task.name}' is {kind.title}: a rolling log-likelihood over a text has no "
                           "chat form (drop chat_template)")
    if config.scorer == Scorer.channel:
        raise HarnessError("scorer=channel scores the input after the label: it has no chat form (use scorer=rank "
                           "with chat_template)")
    template_name = None if name is True or name == "default" else name  # "default": the tokenizer's own
    check_chat_template(config.model, chat_templates_at_planning(config.model), template_name)
    return ChatSettings(template_name=template_name,
                        multiturn=True if config.fewshot_as_multiturn is None else config.fewshot_as_multiturn,
                        system_instruction=config.system_instruction, gen_prefix=config.gen_prefix or None,
                        keep_gap=kind.lmeval_output_type_for(str(config.scorer)) == "loglikelihood")


def check_chat_template(model: ModelConfig, names: list[str] | None, template_name: str | None) -> None:
    """The model's tokenizer has the chat template asked for (names None: not known yet)."""
    if names is None:
        return
    if not names:
        raise HarnessError(f"model '{model.name}' has no chat template (its tokenizer files define none): drop "
                           "chat_template")
    if template_name is not None and template_name not in names:
        raise HarnessError(f"model '{model.name}' has no chat template named '{template_name}' (it has: "
                           f"{', '.join(names)})")


def check_placement(config: RunConfig, finetuning: bool) -> None:
    """model.device_map (one model across devices) against the device setting, data-parallel processes and
    training."""
    model = config.model
    if model.device_map is None:
        if model.max_memory or model.offload_folder:
            raise HarnessError("model.max_memory and model.offload_folder apply with model.device_map (e.g. auto)")
        return
    if model.max_memory is not None and not isinstance(model.max_memory, dict):
        raise HarnessError(f"model.max_memory is a mapping of device to size ({{0: 20GiB, cpu: 64GiB}}), "
                           f"got {model.max_memory!r}")
    if config.device not in (Device.auto, Device.cuda):
        raise HarnessError(f"model.device_map={model.device_map} places the model on the devices accelerate sees "
                           f"(GPUs, then CPU, then disk): leave device=auto, not device={config.device}")
    if launched_processes() > 1:
        raise HarnessError("model.device_map splits one model across the devices, accelerate launch gives each "
                           "process a device of its own: use one or the other")
    if finetuning and model.offload_folder:
        raise HarnessError(f"method={config.method.name} cannot train weights offloaded to disk: drop "
                           "model.offload_folder (and give max_memory room) or use method=icl")
