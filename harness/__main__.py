"""Command line: `python -m harness run [overrides]`, `python -m harness list`, `python -m harness report`."""

from __future__ import annotations

import os
import sys

from harness.errors import HarnessError

USAGE = """usage: python -m harness <command> [options]

commands:
  run    score a model on a task; Hydra overrides such as task=sst2 shots=8 seed=2,
         -m for sweeps (python -m harness run -m shots=0,4,8 seed=1,2,3);
         `python -m harness run --help` shows every setting
  list   show tasks, templates and models
  report tables and plots from the run records: python -m harness report [results_dir] [task=sst2 ...];
         `python -m harness report --help` shows its options
"""
COMMANDS = ("run", "list", "report")


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
            from harness.report.command import report_command  # no Hydra, no torch

            return report_command(rest)
        from harness import cli  # imported late: `--help` and typos stay fast

        return cli.list_command() if command == "list" else cli.run_command(rest)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:  # `python -m harness report | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
