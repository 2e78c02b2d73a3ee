"""What each local server executes on: a GPU (by nvidia-smi) or, on a machine without one, the CPU."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from model_repo_tools import nvidia_smi


@dataclass(frozen=True, slots=True)
class Executor:
    gpu_type: str
    memory_bytes: int
    env: dict[str, str] = field(default_factory=dict)


def gpu_type_name(name: str) -> str:
    """'NVIDIA H200' → 'h200', 'Tesla T4' → 't4', as profiles name GPU types."""
    name = re.sub(r"^(nvidia|tesla)\s+", "", name.strip(), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def _gpus() -> list[tuple[str, int]]:
    out = nvidia_smi.query("--query-gpu=name,memory.total")
    gpus = []
    for line in (out or "").strip().splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            gpus.append((gpu_type_name(name), int(mib.strip()) * 1024 * 1024))
    return gpus


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 8 * 1024**3


def detect_executors(n: int) -> list[Executor]:
    """One executor per server: GPUs round robin, else a 1/n share of host memory each."""
    gpus = _gpus()
    if gpus:
        return [
            Executor(
                gpus[i % len(gpus)][0],
                gpus[i % len(gpus)][1],
                {"CUDA_VISIBLE_DEVICES": str(i % len(gpus))},
            )
            for i in range(n)
        ]
    share = _mem_total() // n
    return [Executor("cpu", share, {"CUDA_VISIBLE_DEVICES": ""}) for _ in range(n)]
