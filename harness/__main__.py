"""Command line: `python -m harness run [overrides]`, `python -m harness list`, `python -m harness report`."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

from harness.errors import HarnessError

USAGE = """usage: python -m harness <command> [options]

commands:
  run    score a model on a task; Hydra overrides such as task=sst2 shots=8 seed=2,
         -m for sweeps (python -m harness run -m shots=0,4,8 seed=1,2,3); --processes N splits each run's
         items across N processes (accelerate launch: one per GPU, or CPU processes);
         `python -m harness run --help` shows every setting
  list   show tasks, templates and models
  report tables and plots from the run records: python -m harness report [results_dir] [task=sst2 ...];
         `python -m harness report --help` shows its options
  sensitivity
         where the variance comes from: runs (or reuses) every combination of demonstration sets, orders,
         templates, label words, calibration and fine-tuning seeds, then decomposes the variance;
         `python -m harness sensitivity --help` shows its options
  cache  the downloaded and converted files: python -m harness cache [list | verify | clear NAME]
"""
COMMANDS = ("run", "list", "report", "sensitivity", "cache")
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def main(argv: list[str]) -> int:
    command_positions = [i for i, arg in enumerate(argv) if not arg.startswith("-") and "=" not in arg]
    if not command_positions:
        print(USAGE, file=sys.stdout if {"-h", "--help"} & set(argv) else sys.stderr, end="")
        return 0 if {"-h", "--help"} & set(argv) else 2
    command = argv[command_positions[0]]
    rest = argv[: command_positions[0]] + argv[command_positions[0] + 1 :]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}' (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        if command == "report":
            from harness.cli.report import report_command  # no Hydra, no torch

            return report_command(rest)
        if command == "cache":
            from harness.sources.cache import cache_command

            return cache_command(rest)
        if command == "sensitivity":
            from harness.cli.sensitivity import sensitivity_command

            return sensitivity_command(rest)
        from harness.cli import run as cli  # imported late: `--help` and typos stay fast

        return cli.list_command() if command == "list" else cli.run_command(rest)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a run's scoring (which says how far it got): loading, importing, ...
        print("error: interrupted; rerun the same command to continue (finished runs and batches are kept)",
              file=sys.stderr)
        return INTERRUPTED


def exit_without_teardown(code: int | str | None) -> NoReturn:
    """Leave as sys.exit(code) would, minus the interpreter's teardown of every loaded module.

    Once torch and transformers are imported, that teardown alone takes about a second on a 2-core
    CPU (import them and exit: 4.9 s; the same ending here: 4.0 s), a tenth of an 8-shot SST-2 run.
    By now every record is written and closed; what must still happen at exit is what the exit
    handlers do (logging, joblib/loky workers, file locks, weakref finalizers such as temporary
    directories), so they run first. A non-daemon thread still running gets the normal exit, which
    waits for it (daemon threads, such as tqdm's monitor, end with the process either way).
    """
    if any(not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message") prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # os._exit skips the handlers; this (CPython's own exit step) runs them now
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left, or the stream is closed: nothing to deliver
            pass
    os._exit(code or 0)


def entry() -> NoReturn:
    """`python -m harness` and the `harness` console script."""
    try:
        exit_code = main(sys.argv[1:])
    except SystemExit as exit_request:  # Hydra and the run command exit this way on errors
        exit_code = exit_request.code
    except BrokenPipeError:  # `python -m harness report | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        exit_code = 1
    exit_without_teardown(exit_code)


if __name__ == "__main__":
    entry()
