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


def chat_templates_at_planning(config: ModelConfig) -> list[str] | None:
    """The names of the chat templates the model's tokenizer files hold ("default" for the unnamed one; [] for none),
    read from the files without loading anything; None where the files are not here yet (a hub model not cached, a
    GGUF not converted yet): the run checks again once the tokenizer is loaded."""
    directory = _tokenizer_dir(config)
    if directory is None:
        return None
    names = set()
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        names.add("default")
    extra = directory / "additional_chat_templates"
    if extra.is_dir():
        names.update(path.stem for path in extra.glob("*.jinja"))
    try:
        declared = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared:
        names.add("default")
    elif isinstance(declared, list):
        names.update(str(entry.get("name")) for entry in declared if isinstance(entry, dict) and entry.get("name"))
    return sorted(names)


def _tokenizer_dir(config: ModelConfig) -> Path | None:
    if is_gguf(config):
        from harness.engine.hf.gguf import converted_entry

        entry = converted_entry(config).path
        return entry if entry.is_dir() else None
    path = Path(config.tokenizer or config.path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(config.tokenizer or config.path).startswith((".", "/", "~")):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(str(config.tokenizer or config.path), "tokenizer_config.json",
                                        revision=config.revision)
    except ValueError:  # not a hub id (a name only a server knows): the loaded tokenizer is checked instead
        return None
    return Path(cached).parent if isinstance(cached, str) else None
