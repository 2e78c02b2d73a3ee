"""model_repo_tools.host: NVML fails cleanly without an NVIDIA driver; process groups by psutil."""

from __future__ import annotations

import os

from model_repo_tools import host


def test_gpu_readings_without_a_driver_are_empty_not_errors() -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert host.gpus() == []
        assert host.gpu_memory({os.getpid()}) is None
        return
    pynvml.nvmlShutdown()
    assert all(g.memory_bytes > 0 for g in host.gpus())
    assert host.gpu_memory({os.getpid()}) == 0  # this process holds no GPU memory


def test_process_group_lists_this_process() -> None:
    members = {p.pid for p in host.process_group(os.getpgid(0))}
    assert os.getpid() in members
    assert host.process_group(2**22 + 7) == []  # no such group
