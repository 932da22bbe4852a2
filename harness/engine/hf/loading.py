"""Loading a transformers model for the HF backend: a hub id, a local directory, a local GGUF file or a packaged GGUF.

A one-process sweep keeps the model an inference run loaded for the next run that asks for the same model
from the same, unchanged files.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as transformers_logging

from harness.config import ModelConfig
from harness.engine.hf.backend import HFBackend
from harness.engine.hf.gguf import converted_entry, gguf_path, is_gguf
from harness.errors import HarnessError
from harness.sources.cache import VERIFICATIONS, Entry, publish, read_manifest, staging, write_manifest
from harness.sources.hub import resolve_model_source


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise HarnessError("device=cuda but no CUDA device is available (use device=auto or device=cpu)")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise HarnessError("device=mps but MPS is not available (use device=auto or device=cpu)")
    if requested not in {"cpu", "cuda", "mps"}:
        raise HarnessError(f"unknown device '{requested}' (choose from: auto, cpu, cuda, mps)")
    return torch.device(requested)


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, str(requested))  # the config schema allows float32, bfloat16 and float16 only


# The model an inference run of this process loaded, kept for the next one that asks for the same model: a
# one-process sweep (Hydra's basic launcher runs every job in this process) loads it once. SmolLM2-135M's load
# is about 12 s of a 38 s 4-shot SST-2 run on 2 cores. One model at most is kept, so memory stays one model's.
_kept: dict[str, HFBackend] = {}


def load_backend(config: ModelConfig, device_name: str, reuse: bool = False) -> HFBackend:
    """reuse=True (runs that do not train): the model the previous such call loaded, if it is the same model
    from the same, unchanged files; fine-tuning asks for a copy of its own."""
    device = resolve_device(device_name)
    dtype = resolve_dtype(config.dtype, device)
    source, local_only = (gguf_converted_dir(config), False) if is_gguf(config) else resolve_model_source(
        config.path, config.revision, "model", hint="use a local path or a named model (python -m harness list)")
    key = json.dumps([asdict(config), str(device), str(dtype), source, files_signature(source)], default=str)
    if reuse and key in _kept:
        print(f"harness: model {config.name} reused from the previous run of this process (loaded once)",
              file=sys.stderr)
        return _kept[key]
    _kept.clear()  # whatever was kept is not this model, or a run is about to train its own copy
    lm = _load(config, source, local_only, device, dtype)
    if reuse:
        _kept[key] = lm
    return lm


def files_signature(source: str) -> list[tuple[str, int, int]] | None:
    """Name, size and modification time of every file of a local model directory: a file replaced or damaged
    since the model was kept means loading again."""
    root = Path(source)
    if not root.is_dir():
        return None  # a hub id resolved online: its revision is in the config
    return sorted((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns)
                  for path in root.rglob("*") if path.is_file() for stat in [path.stat()])


def _load(config: ModelConfig, source: str, local_only: bool, device: torch.device, dtype: torch.dtype) -> HFBackend:
    transformers_logging.disable_progress_bar()  # a second per load, not worth a bar
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=config.revision, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            source, revision=config.revision, dtype=dtype, attn_implementation="sdpa", local_files_only=local_only,
            **_placement(config),
        )
    except Exception as error:  # transformers, tokenizers and safetensors raise many types; one line says it
        raise HarnessError(f"cannot load model '{config.path}': {_folded(error)}") from None
    finally:
        transformers_logging.enable_progress_bar()
    if config.device_map is None:
        model.to(device)
    else:  # accelerate placed the layers and moves activations between them; inputs go where the first layer runs
        device = _input_device(model)
    model.eval()
    if device.type == "cpu":
        # Grouped-query models (SmolLM2, Llama): on CPU, torch's SDPA takes the grouped keys and values with
        # a mask as they are; transformers otherwise repeats them per query head (a copy per layer and batch)
        # because the CUDA kernels need that. Same numbers, about 10% less scoring time here.
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    if config.add_bos and tokenizer.bos_token_id is None:
        raise HarnessError(f"model.add_bos=true but the tokenizer of '{config.name}' has no BOS token")
    return HFBackend(
        name=config.name,
        model=model,
        tokenizer=tokenizer,
        device=device,
        max_length=config.max_length or _context_window(model),
        add_bos=config.add_bos,
    )


def _placement(config: ModelConfig) -> dict[str, Any]:
    """from_pretrained's arguments for a model placed across devices by accelerate (model.device_map)."""
    if config.device_map is None:
        return {}
    # accelerate names GPUs by index: {"0": "20GiB"} from the command line means GPU 0
    max_memory = {int(key) if str(key).isdigit() else str(key): value for key, value in (config.max_memory or {}).items()}
    return {"device_map": str(config.device_map), "max_memory": max_memory or None, "offload_folder": config.offload_folder}


def _input_device(model: PreTrainedModel) -> torch.device:
    """Where a model placed by accelerate takes its inputs: its first accelerator, as accelerate's dispatch
    decides (layers kept in CPU memory or on disk run there too), or the CPU when it uses none."""
    accelerators = [value for value in (getattr(model, "hf_device_map", None) or {}).values()
                    if value not in ("cpu", "disk")]
    if not accelerators:
        return torch.device("cpu")
    first = accelerators[0]
    return torch.device("cuda", first) if isinstance(first, int) else torch.device(first)


def _context_window(model: PreTrainedModel) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model.config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise HarnessError(f"cannot tell the context window of '{model.name_or_path}': set model.max_length")


def gguf_converted_dir(config: ModelConfig) -> str:
    """Dequantise a GGUF once and keep it as safetensors (later loads take seconds); the copy's files are
    checked against the hashes recorded at conversion once per process."""
    entry = converted_entry(config)
    if read_manifest(entry.path) is None:  # never converted, or by a harness that wrote no manifest
        _convert(entry, gguf_path(config))
    VERIFICATIONS.require(entry)
    return str(entry.path)


def _convert(entry: Entry, gguf: Path) -> None:
    with staging(entry.path.parent) as tmp:
        print(f"harness: converting {gguf.name} to safetensors (first use only) ...", file=sys.stderr)
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise HarnessError(f"cannot convert {gguf}: {_folded(error)}") from None
        # The weights are dequantised already; drop the GGUF markers that make save_pretrained refuse.
        del model.config.quantization_config
        model.hf_quantizer = None
        built = tmp / "model"
        model.save_pretrained(built)
        tokenizer.save_pretrained(built)
        write_manifest(built, entry.name, entry.kind, source=str(gguf))
        publish(built, entry.path)  # an older harness's copy without a manifest is replaced


def _folded(error: BaseException) -> str:
    """A library's message on one line, whole: the loaders' messages go on over several ("Couldn't instantiate the
    backend tokenizer from one of: (1) ... (2) ...")."""
    return " ".join(str(error).split()) or type(error).__name__
