"""Memory a run uses: the peak that the report's cost columns show beside time and tokens."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path
from types import TracebackType

import torch

SAMPLE_EVERY_S = 0.05  # reading /proc/self/statm costs microseconds; 20 reads a second are free


def memory_in_use_mb(device: torch.device | str) -> float:
    """Peak allocated memory on CUDA; elsewhere the process's resident set now (Linux). (The process's all-time
    peak RSS would also count earlier jobs of a multirun.)"""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:  # not Linux: the process's peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # macOS reports bytes
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """The most memory in use while the block runs: CUDA's peak allocation when the model is there, else the
    process's resident set, sampled on a background thread (weights, activations, the prefix caches and
    Python itself: what the machine must have)."""

    def __init__(self) -> None:
        self._peak_resident = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="peak memory")

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self._peak_resident = max(self._peak_resident, memory_in_use_mb(torch.device("cpu")))
            if self._stop.wait(SAMPLE_EVERY_S):
                return

    def peak_mb(self, device: torch.device | str) -> float:
        """The peak so far, in MiB, for the device the model runs on (a backend's device_name)."""
        device = torch.device(device) if str(device).split(":")[0] in ("cpu", "cuda", "mps") else torch.device("cpu")
        if device.type == "cuda":
            return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        return round(max(self._peak_resident, memory_in_use_mb(device)), 1)
