"""`python -m harness run --processes N ...`: the run (or sweep) split across N processes by accelerate's
launcher, without writing its command (harness/runs/distributed.py does the splitting)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from harness.errors import HarnessError
from harness.runs.distributed import launched_processes

FLAG = "--processes"


def requested_processes(arguments: list[str]) -> tuple[int | None, list[str]]:
    """N from `--processes N` (or `--processes=N`), and the arguments without it; None when not given."""
    count: str | None = None
    rest: list[str] = []
    items = iter(arguments)
    for argument in items:
        if argument == FLAG:
            count = next(items, "")
        elif argument.startswith(f"{FLAG}="):
            count = argument.partition("=")[2]
        else:
            rest.append(argument)
    if count is None:
        return None, arguments
    if not count.isdigit() or int(count) < 1:
        raise HarnessError(f"{FLAG} takes a number of processes (1 or more), got {count!r}")
    return int(count), rest


def relaunch(count: int, arguments: list[str]) -> int:
    """`python -m harness run <arguments>` under `accelerate launch` with `count` processes, its exit status.
    Processes take the GPUs in turn; on a machine without GPUs they are CPU processes (gloo) with
    cores // count threads each."""
    if launched_processes() > 1:
        raise HarnessError(f"{FLAG} starts the processes itself: this run is one of {launched_processes()} already")
    import torch  # to count the GPUs; the run imports it anyway

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    command = launch_command(count, None if torch.cuda.is_available() else max(1, cores // count))
    print(f"harness: {' '.join(command[1:])} -m harness run ...", file=sys.stderr)
    return subprocess.run([*command, "-m", "harness", "run", *arguments]).returncode


def launch_command(count: int, threads: int | None = None) -> list[str]:
    """accelerate's launcher for `count` processes meeting on a free port (`threads` each, for CPU processes);
    the script or `-m module` to run goes after it. `--multi_gpu` names its torchrun launcher, which starts CPU
    processes on a machine without GPUs (`--cpu` would start one)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(count),
               "--main_process_port", str(free_port())]
    return command + (["--num_cpu_threads_per_process", str(threads)] if threads else [])


def free_port() -> int:
    """A port nobody listens on now, for the processes to meet at (two runs on one machine must not share one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
