"""What the host says about a local server: its GPUs and the GPU memory processes hold (NVML,
through nvidia-ml-py), and the processes of a server's group (psutil).

Where there is no NVIDIA driver, NVML does not load: `gpus()` is then empty and
`gpu_memory()` None, and callers fall back, as they did when nvidia-smi was missing (the
CPU in deploy.hardware; Triton's metrics, then resident memory in the profiler).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import psutil

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str  # as NVML names it, e.g. "NVIDIA H200"
    memory_bytes: int


def _nvml(read: Callable[[ModuleType, list], T]) -> T | None:
    """`read(pynvml, device handles)` between NVML's init and shutdown; None where there is
    no NVIDIA driver or NVML fails."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no NVIDIA driver (or no libnvidia-ml)
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        return read(pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)])
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def gpus() -> list[Gpu]:
    """Every GPU, in NVML's index order (the one CUDA_VISIBLE_DEVICES counts in by default);
    [] where there is no NVIDIA driver."""
    found = _nvml(
        lambda nv, handles: [
            Gpu(nv.nvmlDeviceGetName(h), int(nv.nvmlDeviceGetMemoryInfo(h).total)) for h in handles
        ]
    )
    return found or []


def gpu_memory(pids: Iterable[int]) -> int | None:
    """Bytes of GPU memory that `pids` hold on all GPUs (NVML's compute processes; 0 where
    none of them is one); None where there is no NVIDIA driver."""
    wanted = set(pids)
    apps = _nvml(
        lambda nv, handles: [
            (p.pid, p.usedGpuMemory)
            for h in handles
            for p in nv.nvmlDeviceGetComputeRunningProcesses(h)
        ]
    )
    if apps is None:
        return None
    # usedGpuMemory is None where NVML cannot tell (nvidia-smi's "[N/A]").
    return sum(used for pid, used in apps if pid in wanted and used is not None)


def process_group(pgid: int) -> list[psutil.Process]:
    """The processes of process group `pgid` that have not exited (zombies left out): a
    server started in its own session, and its Python-backend stubs."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members
