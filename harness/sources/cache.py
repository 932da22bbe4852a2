"""The harness's cache (HARNESS_CACHE, default ~/.cache/harness): entries that carry their hashes.

An entry is a directory (a packaged asset extracted from its wheel, or a model converted from GGUF)
with a manifest listing each file's size and sha256, written when the entry is complete. Loading an
entry checks its sizes every time and its hashes once per process, so a truncated or overwritten
file is found before it is used, with the command that repairs it. Entries are built in a staging
directory named after the building process; one left behind by a killed process is removed the next
time the cache is used (`sweep_partials`).

`python -m harness cache [list | verify [NAME ...] | clear NAME ... | clear --all]` lists, checks and
removes entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError

MANIFEST = ".harness-manifest.json"
PARTIAL_PREFIX = ".partial-"  # staging directories: .partial-<pid>-<random>
LEGACY_STAGING_AGE_S = 3600  # tmp* staging directories of older harness versions, removed once this old
HASH_BLOCK = 1 << 20


def cache_dir() -> Path:
    """Root of everything the harness caches; set HARNESS_CACHE to move it."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")).expanduser()


def writable_dir(path: Path) -> Path:
    """`path` (under the cache) created if needed; one clear line when the cache cannot be written."""
    root = cache_dir()
    if root.exists() and not root.is_dir():
        raise HarnessError(f"the cache location {root} is a file, not a directory (set HARNESS_CACHE to a directory)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f"{PARTIAL_PREFIX}{os.getpid()}-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise HarnessError(f"cannot write to the cache directory {path} ({error.strerror or error}); "
                           "set HARNESS_CACHE to a writable directory") from None
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)  # releases the GIL: a background check runs beside the main thread
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    name: str  # what `cache clear` takes
    kind: str  # asset | model
    path: Path

    @property
    def repair(self) -> str:
        return f"python -m harness cache clear {self.name}"


def write_manifest(directory: Path, name: str, kind: str, source: str) -> None:
    """Record every file's size and sha256; the entry counts as complete from here on."""
    files = {str(path.relative_to(directory)): {"size": path.stat().st_size, "sha256": sha256_file(path)}
             for path in sorted(directory.rglob("*")) if path.is_file() and path.name != MANIFEST}
    payload = {"name": name, "kind": kind, "source": source, "files": files}
    (directory / MANIFEST).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def entry_problems(entry: Entry, hashes: bool) -> list[str]:
    """What is wrong with an entry's files (missing, wrong size, and with hashes=True wrong content)."""
    manifest = read_manifest(entry.path)
    if manifest is None:
        return [f"{MANIFEST} is missing or unreadable"]
    problems = []
    for relative, expected in manifest["files"].items():
        path = entry.path / relative
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{relative} is missing")
            continue
        if size != expected["size"]:
            problems.append(f"{relative} has {size:,} bytes, {expected['size']:,} were recorded")
        elif hashes and sha256_file(path) != expected["sha256"]:
            problems.append(f"{relative} does not match the sha256 recorded when it was written")
    return problems


class _Verifications:
    """Full-hash checks, each entry once per process, optionally started early on a background thread
    (hashing the 540 MB of SmolLM2's weights takes ~0.4 s of one core; started at planning time it
    overlaps the imports of torch and transformers, which hold the other core)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[Path, threading.Thread] = {}
        self._results: dict[Path, list[str]] = {}

    def start(self, entry: Entry) -> None:
        with self._lock:
            if entry.path in self._threads:
                return
            thread = threading.Thread(target=self._check, args=(entry,), daemon=True, name=f"verify {entry.name}")
            self._threads[entry.path] = thread
        thread.start()

    def _check(self, entry: Entry) -> None:
        try:
            problems = entry_problems(entry, hashes=True)
        except OSError as error:
            problems = [f"cannot be read ({error.strerror or error})"]
        with self._lock:
            self._results[entry.path] = problems

    def require(self, entry: Entry) -> None:
        """Raise the one-line error if the entry's files do not match its manifest."""
        self.start(entry)
        self._threads[entry.path].join()
        problems = self._results[entry.path]
        if problems:
            raise HarnessError(f"the cached {entry.kind} {entry.name} is corrupt ({entry.path}: {problems[0]}); "
                               f"repair with: {entry.repair}")


VERIFICATIONS = _Verifications()


@contextlib.contextmanager
def staging(parent: Path) -> Iterator[Path]:
    """A fresh directory beside the final one, removed if the block fails; a kill leaves it for sweep_partials."""
    writable_dir(parent)
    sweep_partials(parent)
    path = parent / f"{PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(built: Path, target: Path, replace: bool = False) -> None:
    """Move a staged entry into place. Two processes may build the same entry at once (a parallel sweep on a
    fresh machine): the first to finish publishes it, the second keeps that one (the same content, checked
    by its hashes on use) and drops its own with the staging directory. replace=True: a finished entry there
    is outdated and goes (only now that its successor is built)."""
    if read_manifest(target) is not None and not replace:
        return
    if target.exists():  # outdated, or no manifest: what a killed build of an older harness version left
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(built, target)  # atomic: the entry appears complete or not at all
    except OSError:
        if read_manifest(target) is None:  # not another process's finished entry: a real failure
            raise


def sweep_partials(parent: Path) -> None:
    """Remove staging directories whose process is gone (and old tmp* ones of earlier harness versions)."""
    if not parent.is_dir():
        return
    for path in parent.iterdir():
        if path.name.startswith(PARTIAL_PREFIX):
            pid = path.name[len(PARTIAL_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith("tmp") and path.is_dir():
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > LEGACY_STAGING_AGE_S:
                    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def entries() -> list[Entry]:
    """Every complete or damaged entry: a directory under assets/ or models/ (manifest or not)."""
    found = []
    for kind, folder in (("asset", "assets"), ("model", "models")):
        root = cache_dir() / folder
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if path.is_dir() and not path.name.startswith((".", "tmp")):
                manifest = read_manifest(path) or {}
                found.append(Entry(name=str(manifest.get("name", path.name)), kind=kind, path=path))
    return found


def model_entry(name: str) -> Entry:
    """A packaged model converted to safetensors (harness/engine/hf/backend.py)."""
    return Entry(name=name, kind="model", path=cache_dir() / "models" / name)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


USAGE = """usage: python -m harness cache [list | verify [NAME ...] | clear NAME ... | clear --all]

  list          the cached assets and models, their size and where they are (the default)
  verify        check every file of each entry (or of the named ones) against the sizes and sha256
                recorded when it was written; exit 1 if any is damaged
  clear NAME    remove an entry: the next run that needs it downloads or converts it again
"""


def cache_command(arguments: list[str]) -> int:
    if {"-h", "--help"} & set(arguments):
        print(USAGE, end="")
        return 0
    action, names = (arguments[0], arguments[1:]) if arguments else ("list", [])
    root = cache_dir()
    if action in ("list", "verify", "clear") and not root.is_dir():  # a mistyped HARNESS_CACHE is not a clean cache
        where = "HARNESS_CACHE" if "HARNESS_CACHE" in os.environ else "the default location"
        if action == "list":
            print(f"the cache directory {root} ({where}) does not exist: nothing is downloaded or converted there yet")
            return 0
        raise HarnessError(f"the cache directory {root} ({where}) does not exist: nothing to {action}")
    known = {entry.name: entry for entry in entries()}
    if action == "list":
        if not known:
            print(f"the cache {cache_dir()} holds no entries")
        for entry in known.values():
            state = "" if read_manifest(entry.path) else "  (no manifest: unfinished, or an older harness's; not used)"
            print(f"{entry.name:<28} {entry.kind:<6} {_size(entry.path) / 2**20:9.1f} MiB  {entry.path}{state}")
        return 0
    if action not in ("verify", "clear"):
        raise HarnessError(f"unknown cache action '{action}' (list, verify, clear)")
    if action == "clear" and not names:
        raise HarnessError("cache clear needs entry names or --all (python -m harness cache list shows them)")
    chosen = list(known.values()) if not names or names == ["--all"] else []
    for name in [] if chosen else names:
        if name not in known:
            raise HarnessError(f"no cache entry '{name}' (entries: {', '.join(known) or 'none'})")
        chosen.append(known[name])
    if action == "clear":
        for entry in chosen:
            shutil.rmtree(entry.path)
            print(f"removed {entry.name} ({entry.path})")
        return 0
    damaged = 0
    for entry in chosen:
        problems = entry_problems(entry, hashes=True)
        damaged += bool(problems)
        print(f"{entry.name:<28} " + (f"DAMAGED: {'; '.join(problems)}; repair with: {entry.repair}" if problems else "ok"))
    if damaged:
        print(f"{damaged} of {len(chosen)} entries damaged", file=sys.stderr)
    return 1 if damaged else 0
