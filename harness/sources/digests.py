"""File hashes remembered in the cache by path, size, modification time and inode: a large local checkpoint or data
file is hashed once, not on every run (they enter run keys, harness/runs/records.py)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.files import write_json
from harness.sources.cache import cache_dir, sha256_file

MEMO_FILE = "fingerprints.json"


def file_digest(path: Path) -> str:
    """The sha256 of a file's content."""
    return _memo.digest(path.resolve())


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
