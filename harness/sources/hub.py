"""Fail fast when the Hugging Face hub cannot be reached.

Without this, transformers and datasets retry for about 20 s before giving up.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import try_to_load_from_cache

from harness.errors import HarnessError


def hub_offline_by_choice() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_hub(what: str, hint: str) -> None:
    """Raise a one-line error if `what` must come from the hub and the hub is out of reach."""
    if hub_offline_by_choice():
        raise HarnessError(f"{what} is not available locally and HF_HUB_OFFLINE=1 forbids downloading it; {hint}")
    if not hub_reachable():
        raise HarnessError(f"{what} must come from the Hugging Face hub, which cannot be reached (offline?); {hint}")


def resolve_model_source(path: str, revision: str | None, what: str, hint: str) -> tuple[str, bool]:
    """A local directory, or a hub id that is cached or can be downloaded now; and whether to load it with
    local_files_only (cached but the hub is out of reach: skip the libraries' ~20 s of retries)."""
    local = Path(path).expanduser()
    if local.exists():
        return str(local), False
    if path.startswith((".", "/", "~")):
        raise HarnessError(f"{what} path not found: {path}")
    if hub_offline_by_choice():  # the libraries serve their cache or fail at once
        return path, False
    cached = isinstance(try_to_load_from_cache(path, "config.json", revision=revision), str)
    if not cached:
        require_hub(f"{what} '{path}'", hint=hint)
    return path, cached and not hub_reachable()


def hub_commit(path: str, revision: str | None) -> str:
    """The commit a hub model id resolves to: asked of the hub when it can be reached (a branch may have
    moved since the model was cached, and loading would fetch the new commit), else from the local cache.
    One line, before anything else runs, when it is neither reachable nor cached."""
    try:
        cached = try_to_load_from_cache(path, "config.json", revision=revision)
    except ValueError as error:  # not a valid repo id
        raise HarnessError(f"model '{path}' is neither a local path nor a hub id: {str(error).splitlines()[0]}") from None
    if hub_offline_by_choice() or not hub_reachable():
        if isinstance(cached, str):
            return Path(cached).parent.name  # .../snapshots/<commit>/config.json
        require_hub(f"model '{path}'", hint="use a local path or a named model (python -m harness list)")
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(path, revision=revision).sha
    except Exception as error:  # a private, gated or missing repo
        raise HarnessError(f"cannot load model '{path}': {str(error).strip().splitlines()[0]}") from None
