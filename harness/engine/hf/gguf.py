"""Models that come as GGUF files: a packaged one (PyPI wheels, harness/sources/assets.py) or any local `.gguf` file.

transformers reads a GGUF by dequantising every tensor (1.8 minutes for Gemma 3 270M on this 2-core machine),
so each is converted once into the cache as safetensors (harness/engine/hf/backend.py) and later runs load that copy in
seconds. A packaged model's copy is named after the model; a local file's after its sha256, so a changed file
is converted again rather than confused with the old one. Nothing here imports torch: planning checks a
GGUF file in one line before the minutes of loading start.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.sources.assets import asset_path
from harness.sources.cache import VERIFICATIONS, Entry, model_entry, read_manifest, writable_dir
from harness.sources.digests import file_digest

GGUF_MAGIC = b"GGUF"


def local_gguf(config: ModelConfig) -> Path | None:
    """The GGUF file `model=<path>.gguf` names (not yet checked to exist), or None."""
    if config.gguf_asset:
        return None
    path = Path(config.path).expanduser()
    return path if path.suffix.lower() == ".gguf" else None


def is_gguf(config: ModelConfig) -> bool:
    return bool(config.gguf_asset) or local_gguf(config) is not None


def converted_entry(config: ModelConfig) -> Entry:
    """The cache entry that holds (or will hold) the model's safetensors copy."""
    local = local_gguf(config)
    if local is None:
        return model_entry(config.name)
    return model_entry(f"{local.stem}-{file_digest(_existing(local))[:12]}")


def gguf_path(config: ModelConfig) -> Path:
    """The GGUF file itself: fetched (and verified) for a packaged model."""
    local = local_gguf(config)
    return asset_path(config.gguf_asset) if local is None else _existing(local)


def prepare_gguf(config: ModelConfig) -> Entry:
    """At planning: a converted copy starts being verified on a background thread; a model still to be converted
    needs a writable cache and a GGUF that transformers can read (fetched now if packaged)."""
    entry = converted_entry(config)
    if read_manifest(entry.path) is not None:
        VERIFICATIONS.start(entry)
    else:
        writable_dir(entry.path.parent)
        check_architecture(gguf_path(config))
    return entry


def check_architecture(path: Path) -> str:
    """The file's `general.architecture`, or one line saying why transformers cannot load it."""
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise HarnessError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    from gguf import GGUFReader
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING  # 1.6 s: imports transformers, not torch

    try:
        field = GGUFReader(path).fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode()
    except (KeyError, ValueError, IndexError) as error:
        raise HarnessError(f"cannot read the architecture of {path}: {error}") from None
    # transformers spells some architectures with an underscore that llama.cpp leaves out (qwen2moe, gpt-oss)
    known = {name.replace("_", ""): name for name in GGUF_CONFIG_MAPPING if name not in ("general", "tokenizer")}
    if architecture.replace("-", "").replace("_", "") not in known:
        raise HarnessError(f"{path.name} holds a '{architecture}' model, which transformers cannot load from GGUF "
                           f"(it reads: {', '.join(sorted(known.values()))})")
    return architecture


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise HarnessError(f"model file not found: {path}")
    return path
