"""Content hashes of the data a run reads (the task and template files are hashed by harness/sources/digests.py, the
weights by their backend's fingerprint): they enter the run key (harness/runs/records.py), so a changed input
gives a new run rather than the old numbers."""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

from harness.inputs.data import Example


def examples_digest(examples: Sequence[Example]) -> str:
    """sha256 of the examples as the run sees them (id, fields, label), whatever their source."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.id, dict(example.fields), example.label, list(example.choices)],
                                 ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
