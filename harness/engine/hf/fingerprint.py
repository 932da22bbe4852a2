"""What identifies a transformers model's weights and tokenizer, at planning time (no model loaded, no torch): it
enters the run key, so changed weights are a new run, never the old numbers under the old name."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from harness.config import ModelConfig
from harness.engine.hf.gguf import is_gguf, prepare_gguf
from harness.errors import HarnessError
from harness.sources.assets import ASSETS
from harness.sources.digests import file_digest
from harness.sources.hub import hub_commit


def model_fingerprint(config: ModelConfig) -> str:
    """What identifies the weights and tokenizer a run loads.

    A packaged GGUF: its content's sha256 (the conversion is deterministic). A local file (a GGUF): its
    sha256. A local directory: the hashes of its files. A hub id: the commit it resolves to (cached, or
    asked of the hub). A GGUF still to be converted is checked now (its architecture, a writable cache), one
    already converted starts being verified on a background thread.
    """
    if is_gguf(config):
        prepare_gguf(config)
    if config.gguf_asset:
        if config.gguf_asset not in ASSETS:
            raise HarnessError(f"unknown packaged asset '{config.gguf_asset}' (known: {', '.join(sorted(ASSETS))})")
        return f"gguf-wheel:{ASSETS[config.gguf_asset].identity}"
    local = Path(config.path).expanduser()
    if local.is_file():
        return f"file:{file_digest(local)}"
    if local.is_dir():
        files = sorted(p for p in local.iterdir() if p.is_file() and not p.name.startswith("."))
        _check_model_dir(local, {p.name for p in files})
        listing = [[p.name, file_digest(p)] for p in files]
        return "files:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    if config.path.startswith((".", "/", "~")):
        raise HarnessError(f"model path not found: {config.path}")
    return f"hub:{config.path}@{hub_commit(config.path, config.revision)}"


# What transformers reads from a model directory: the config, the weights (one file or shards), a tokenizer
MODEL_CONFIG = "config.json"
WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _check_model_dir(directory: Path, names: set[str]) -> None:
    """A local model directory holds what loading it needs: said before anything loads, naming what is missing."""
    missing = [what for what, present in (
        (MODEL_CONFIG, MODEL_CONFIG in names),
        ("weights (model.safetensors, or pytorch_model.bin, or their shards)",
         any(fnmatch.fnmatch(name, pattern) for name in names for pattern in WEIGHTS)),
        (f"tokenizer files ({', '.join(TOKENIZER[:2])}, ...)", bool(names & set(TOKENIZER))),
    ) if not present]
    if missing:
        raise HarnessError(f"model directory {directory} has no {' and no '.join(missing)}: a model directory holds "
                           "what save_pretrained writes for the model and for its tokenizer")
