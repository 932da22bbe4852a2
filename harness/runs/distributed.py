"""Data-parallel runs: `accelerate launch -m harness run ...` starts N processes that split the test items.

Every process plans the same run (planning is deterministic), scores a contiguous block of the test
items with the shared-prefix engine and hands its predictions to the main process, which puts them
back in item order, measures them and writes the one record; the record is then handed to every
process, so a sweep goes on in step. A fine-tuning run trains once, on the main process, and saves
its weights in the run directory (as it does for resuming); the other processes wait and load them,
so every process scores with the very same weights.

Only WORLD_SIZE and RANK (set by accelerate launch and torchrun) are read until a model must run:
planning imports no torch. accelerate gives each process its device (GPU local_rank, or the CPU); what
the processes exchange (predictions, the record) are Python objects, sent over a gloo group on the
CPU whatever the devices, so several processes may also share one GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")

# The other processes wait at a barrier while the main one fine-tunes; torch's default (30 minutes) would
# end a long CPU training run with a timeout on the waiting side.
WAIT_LIMIT = timedelta(hours=12)


def launched_processes() -> int:
    """How many processes `accelerate launch` (or torchrun) started for this run; 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """The process that prints and writes: rank 0, or the only one."""
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of a data-parallel run (index 0 of 1 when run plainly)."""

    index: int = 0
    count: int = 1
    group: Any = field(default=None, compare=False, repr=False)  # torch.distributed's gloo group

    @property
    def main(self) -> bool:
        return self.index == 0

    def shard(self, items: int) -> slice:
        """This process's contiguous block of `items`: concatenated in process order, the blocks are the items
        in order; sizes differ by one at most."""
        return slice(items * self.index // self.count, items * (self.index + 1) // self.count)

    def wait_for_others(self) -> None:
        if self.count > 1:
            import torch.distributed

            torch.distributed.barrier(group=self.group)

    def gather(self, value: T) -> list[T] | None:
        """Every process's value, in process order, on the main process (None on the others)."""
        if self.count == 1:
            return [value]
        import torch.distributed

        gathered: list[Any] | None = [None] * self.count if self.main else None
        torch.distributed.gather_object(value, gathered, dst=0, group=self.group)
        return gathered

    def from_main(self, value: T | None) -> T:
        """The main process's value, on every process."""
        if self.count == 1:
            return value  # type: ignore[return-value]
        import torch.distributed

        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0, group=self.group)
        return holder[0]  # type: ignore[return-value]


SINGLE = Processes()


@cache
def join_processes(device: str) -> Processes:
    """This process's place, joining the process group on first use (accelerate's: gloo on CPU, NCCL on CUDA;
    it sets this process's device)."""
    if launched_processes() == 1:
        return SINGLE
    import torch.distributed
    from accelerate import PartialState

    from harness.engine.hf.loading import resolve_device

    # cpu=True is what makes accelerate join the CPU processes into one gloo group; without it, on a machine
    # with no GPU, each process would find itself alone and write the record of its block as the whole run's.
    state = PartialState(cpu=resolve_device(device).type == "cpu", timeout=WAIT_LIMIT)
    if state.num_processes != launched_processes():
        raise HarnessError(f"{launched_processes()} processes were launched, but accelerate joined "
                           f"{state.num_processes}: not scoring blocks that no process would put together")
    group = None if state.backend == "gloo" else torch.distributed.new_group(backend="gloo", timeout=WAIT_LIMIT)
    return Processes(index=state.process_index, count=state.num_processes, group=group)
