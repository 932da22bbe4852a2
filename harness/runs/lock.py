"""One process at a time per run directory.

Two commands that plan the same run (a repeated command in a second terminal, two sweeps that share a
cell) must not both score it: the second would take the first's live journal for an interrupted run's
and reuse its items, and both would write the record. The process that runs a run holds an exclusive
lock on the run directory's `.lock` file; a second one says who holds it and waits, then finds the record
complete (and reuses it) or runs what is left. The operating system releases the lock when its holder
ends in any way, kill -9 included, so a lock is never left stale. The holder removes the file as it lets go;
a process that was waiting on the removed file sees that the path no longer leads to the file it locked, and
locks the path anew, so two processes never both hold a run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from harness.errors import HarnessError
from harness.files import FILE_MODE

LOCK_FILE = ".lock"


class RunLock:
    """`with RunLock(run_dir):` holds the run directory for this process, waiting while another holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._descriptor: int | None = None

    def __enter__(self) -> RunLock:
        announced = False
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            except OSError as error:
                raise HarnessError(f"cannot write the run record to {self.path.parent} "
                                   f"({error.strerror or error}); set output_dir to a writable directory") from None
            try:
                announced = self._take(descriptor, announced)
                if self._still_at_path(descriptor):
                    break
            except BaseException:
                os.close(descriptor)
                raise
            os.close(descriptor)  # its holder removed it as it let go: lock the path anew
        self._descriptor = descriptor
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                          "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        return self

    def _take(self, descriptor: int, announced: bool) -> bool:
        """Lock the file, saying once who holds it when that means waiting; whether it was said."""
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return announced
        except BlockingIOError:
            pass
        if not announced:
            print(f"harness: {self.path.parent} is being run by {self.holder()}; waiting for it to finish "
                  "(Ctrl-C stops waiting)", file=sys.stderr)
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # returns once the holder ends; Ctrl-C interrupts it
        return True

    def _still_at_path(self, descriptor: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it: "process 1234 on host (since 2026-12-07 18:20:03)"."""
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            return f"process {holder['pid']} on {holder['host']} (since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):  # written a moment from now, or by something else
            return "another process"

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._descriptor is not None:
            self.path.unlink(missing_ok=True)  # while still held: a waiter then finds the path changed (above)
            os.close(self._descriptor)  # releases the lock
            self._descriptor = None
