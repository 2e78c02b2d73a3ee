"""What local servers execute on: NVML's GPUs round robin, else a share of host memory each."""

from __future__ import annotations

import psutil

from deploy.hardware import detect_executors, gpu_type_name
from model_repo_tools import host


def test_executors_follow_the_hosts_gpus_or_share_its_memory() -> None:
    executors = detect_executors(3)
    gpus = host.gpus()
    if not gpus:  # no NVIDIA driver: NVML says so quietly, and servers run on the CPU
        assert {e.gpu_type for e in executors} == {"cpu"}
        assert all(e.memory_bytes == psutil.virtual_memory().total // 3 for e in executors)
        assert all(e.env == {"CUDA_VISIBLE_DEVICES": ""} for e in executors)
        return
    for i, e in enumerate(executors):
        gpu = gpus[i % len(gpus)]
        assert (e.gpu_type, e.memory_bytes) == (gpu_type_name(gpu.name), gpu.memory_bytes)
        assert e.env == {"CUDA_VISIBLE_DEVICES": str(i % len(gpus))}


def test_gpu_type_names() -> None:
    assert gpu_type_name("NVIDIA H200") == "h200"
    assert gpu_type_name("Tesla T4") == "t4"
    assert gpu_type_name("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
