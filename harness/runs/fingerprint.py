"""Content hashes of what a run reads besides its config: task and template files, data, model weights.

They enter the run key (harness/runs/records.py), so editing a template, a data file or the weights gives
a new run rather than the old numbers. File hashes are remembered in the cache by path, size,
modification time and inode, so a large local checkpoint is hashed once, not on every run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Sequence

from harness.config import ModelConfig
from harness.errors import HarnessError
from harness.inputs.data import Example
from harness.runs.records import write_json
from harness.sources.assets import ASSETS
from harness.sources.cache import cache_dir, sha256_file
from harness.sources.hub import hub_commit

MEMO_FILE = "fingerprints.json"


def examples_digest(examples: Sequence[Example]) -> str:
    """sha256 of the examples as the run sees them (id, fields, label), whatever their source."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.id, dict(example.fields), example.label, list(example.choices)],
                                 ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    return _memo.digest(path.resolve())


def model_fingerprint(config: ModelConfig) -> str:
    """What identifies the weights and tokenizer a run loads.

    A packaged GGUF: its content's sha256 (the conversion is deterministic). A local file (a GGUF): its
    sha256. A local directory: the hashes of its files. A hub id: the commit it resolves to (cached, or
    asked of the hub).
    """
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


class _Memo:
    """path -> sha256, valid while the file's size, mtime and inode are unchanged; kept in the cache."""

    def __init__(self) -> None:
        self._entries: dict[str, list] | None = None

    def digest(self, path: Path) -> str:
        entries = self._load()
        status = path.stat()
        stamp = [status.st_size, status.st_mtime_ns, status.st_ino]
        known = entries.get(str(path))
        if known and known[:3] == stamp:
            return known[3]
        value = sha256_file(path)
        entries[str(path)] = [*stamp, value]
        self._save()
        return value

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            try:
                loaded = json.loads((cache_dir() / MEMO_FILE).read_text(encoding="utf-8"))
                self._entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def _save(self) -> None:
        try:  # only a speed-up: a read-only cache just means hashing again next time
            write_json(cache_dir() / MEMO_FILE, self._entries)
        except OSError:
            pass


_memo = _Memo()
