"""Fail fast when the Hugging Face hub cannot be reached.

Without this, transformers and datasets retry for about 20 s before giving up.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

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
