"""Append-only journal of finished batches, so a killed or interrupted run resumes where it stopped.

journal.jsonl in the run directory: a header line naming what is being scored (a digest of the
requests), then one line per finished batch: the request indices and their results. Each line is
written and flushed as its batch finishes (a kill -9 loses at most the batch in flight; a line cut by
the kill is ignored). A rerun reads the journal and scores only the rest, in the very batches an
uninterrupted run would form, so its record equals an uninterrupted run's (tested).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.files import FILE_MODE

JOURNAL_FILE = "journal.jsonl"


def journal_path(run_dir: Path, process: int = 0, processes: int = 1) -> Path:
    """The journal of one process: each process of a data-parallel run journals its own block of items (a
    rerun with as many processes resumes each block; with another count the blocks differ and start again)."""
    return run_dir / (JOURNAL_FILE if processes == 1 else f"journal.{process + 1}-of-{processes}.jsonl")


def remove_journals(run_dir: Path) -> None:
    """Once the record is written: every process's journal goes."""
    for path in [run_dir / JOURNAL_FILE, *run_dir.glob("journal.*-of-*.jsonl")]:
        path.unlink(missing_ok=True)


class Journal:
    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        """Open the journal at `path`: keep what an earlier process finished under the same header, else start
        a new one."""
        self.path = path
        self.results: dict[int, Any] = {}
        self.tokens: dict[int, int] = {}  # first index of a batch -> tokens it forwarded
        lines = _read_lines(path)
        valid = 0
        if lines and _parse(lines[0]) == header:
            valid = 1
            for line in lines[1:]:
                entry = _parse(line)
                if not isinstance(entry, dict) or not _well_formed(entry):
                    break  # a line cut by a kill: it and anything after it are redone
                self.results.update(zip(entry["rows"], entry["results"]))
                self.tokens[entry["rows"][0]] = entry["tokens"]
                valid += 1
        self.resumed_rows = frozenset(self.results)  # what earlier processes finished
        text = "".join(line + "\n" for line in lines[:valid]) if valid else json.dumps(header) + "\n"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            self._stream = os.fdopen(descriptor, "w", encoding="utf-8")
            self._stream.write(text)
            self._stream.flush()
        except OSError as error:
            raise HarnessError(f"cannot write {path}: {error.strerror or error}") from None

    def record(self, rows: Sequence[int], results: Sequence[Any], tokens: int) -> None:
        """One finished batch."""
        line = json.dumps({"rows": list(rows), "results": list(results), "tokens": tokens}, allow_nan=False)
        try:
            self._stream.write(line + "\n")
            self._stream.flush()  # in the kernel's hands: survives a kill of this process
        except OSError as error:
            raise HarnessError(f"cannot write {self.path}: {error.strerror or error} "
                               f"({len(self.results)} results kept there; rerun the same command to continue)") from None
        self.results.update(zip(rows, results))
        self.tokens[rows[0]] = tokens

    def done(self, below: int) -> int:
        """How many of the requests 0 .. below - 1 are finished."""
        return sum(1 for index in self.results if index < below)

    def close(self) -> None:
        self._stream.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines = text.split("\n")
    return lines[:-1]  # the part after the last newline was cut mid-line (or is empty)


def _parse(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _well_formed(entry: dict[str, Any]) -> bool:
    rows, results = entry.get("rows"), entry.get("results")
    return (isinstance(rows, list) and isinstance(results, list) and len(rows) == len(results) > 0
            and all(isinstance(row, int) for row in rows) and isinstance(entry.get("tokens"), int))
