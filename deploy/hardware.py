"""What each local server executes on: a GPU (by NVML) or, on a machine without one, the CPU."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psutil

from model_repo_tools import host


@dataclass(frozen=True, slots=True)
class Executor:
    gpu_type: str
    memory_bytes: int
    env: dict[str, str] = field(default_factory=dict)


def gpu_type_name(name: str) -> str:
    """'NVIDIA H200' → 'h200', 'Tesla T4' → 't4', as profiles name GPU types."""
    name = re.sub(r"^(nvidia|tesla)\s+", "", name.strip(), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def detect_executors(n: int) -> list[Executor]:
    """One executor per server: GPUs round robin, else a 1/n share of host memory each."""
    gpus = host.gpus()
    if gpus:
        return [
            Executor(
                gpu_type_name(gpus[i % len(gpus)].name),
                gpus[i % len(gpus)].memory_bytes,
                {"CUDA_VISIBLE_DEVICES": str(i % len(gpus))},
            )
            for i in range(n)
        ]
    share = psutil.virtual_memory().total // n
    return [Executor("cpu", share, {"CUDA_VISIBLE_DEVICES": ""}) for _ in range(n)]
