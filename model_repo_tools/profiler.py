"""Profiling a model on a live Triton server: latency per batch size and the memory it holds.

A search fed by measurements (as Triton Model Analyzer does): per batch size, a
few warm-up runs, then timed runs of one gRPC `infer` each; the recorded
latency is a high percentile (p90 by default), not the best run, because the
scheduler plans against it and the router's deadlines depend on it. Memory is
Triton's `memory_usage` statistics where the backend reports it, else on a GPU
server the GPU memory of the server's processes (nvidia-smi's compute apps), or the
GPU's used memory from Triton's metrics (`nv_gpu_memory_used_bytes`), else
the resident memory of the server's process group (Python-backend stubs are
separate processes) — each measured as growth from before the model was loaded.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.errors import ServerError, UserInputError
from model_repo_tools import nvidia_smi
from model_repo_tools.fleet import FleetGpu
from model_repo_tools.profiles import BatchPoint, Profile
from model_repo_tools.triton_client import TritonServer

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
_NP = {
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_FP64": np.float64,
    "TYPE_INT64": np.int64,
    "TYPE_INT32": np.int32,
    "TYPE_INT8": np.int8,
    "TYPE_UINT8": np.uint8,
    "TYPE_BOOL": np.bool_,
}


@dataclass(slots=True)
class ProfileSettings:
    batches: tuple[int, ...] = DEFAULT_BATCHES
    warmup: int = 10
    warmup_s: float = 0.3  # onnxruntime and the stub settle on a new shape over several runs
    runs: int = 20
    percentile: float = 90.0


def _group_rss(pid: int) -> int:
    """Resident bytes of every process in `pid`'s process group (server + its stubs)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pid:  # field 5 of stat: the process group id
                total += int((entry / "statm").read_text().split()[1]) * page
    return total


def _group_pids(pgid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.add(int(entry.name))
    return pids


def parse_compute_apps(text: str, pids: set[int]) -> int | None:
    """Bytes of GPU memory that `pids` hold, from `nvidia-smi --query-compute-apps=pid,
    used_memory --format=csv,noheader,nounits` (MiB); None when none of them is listed."""
    total, seen = 0, False
    for line in text.strip().splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and int(pid) in pids and mib.strip().isdigit():
            total += int(mib.strip()) * 1024 * 1024
            seen = True
    return total if seen else None


def _nvidia_smi_memory(pgid: int) -> int | None:
    out = nvidia_smi.query("--query-compute-apps=pid,used_memory")
    if out is None:
        return None
    used = parse_compute_apps(out, _group_pids(pgid))
    return 0 if used is None else used  # no GPU process in the group: it holds nothing


def parse_gpu_metrics(text: str) -> int | None:
    """Used GPU bytes from Triton's Prometheus text; None where the metrics are dead
    (seen on an H200 machine: DCGM unavailable, total and used both read 0)."""
    used = total = 0.0
    for ln in text.splitlines():
        if ln.startswith("nv_gpu_memory_used_bytes"):
            used += float(ln.split()[-1])
        elif ln.startswith("nv_gpu_memory_total_bytes"):
            total += float(ln.split()[-1])
    return int(used) if total > 0 else None


def _gpu_memory_used(metrics: str) -> int | None:
    import httpx

    try:
        return parse_gpu_metrics(httpx.get(f"http://{metrics}/metrics", timeout=5).text)
    except httpx.HTTPError:
        return None


class MemoryProbe:
    """How much memory the server holds now, by the best means this server offers."""

    def __init__(self, gpu: FleetGpu) -> None:
        self.gpu = gpu

    def __call__(self) -> int | None:
        if self.gpu.gpu_type != "cpu":
            # Per process first: it counts only this server, even when servers share a GPU.
            used = _nvidia_smi_memory(self.gpu.pid) if self.gpu.pid else None
            if used is None and self.gpu.metrics:
                used = _gpu_memory_used(self.gpu.metrics)
            if used is not None:
                return used
        if self.gpu.pid and Path(f"/proc/{self.gpu.pid}").exists():
            return _group_rss(self.gpu.pid)
        return None


def _reported_memory(stats: dict) -> int | None:
    for m in stats.get("model_stats", []):
        usage = m.get("memory_usage") or []
        if usage:
            return sum(int(u.get("byte_size", 0)) for u in usage)
    return None


def _inputs(config: dict, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    batched = int(config.get("max_batch_size", 0)) > 0
    out = {}
    for t in config["input"]:
        dims = [int(d) if int(d) > 0 else 1 for d in t.get("dims", [])]
        shape = ([batch] if batched else []) + dims
        dtype = _NP.get(t.get("data_type", "TYPE_FP32"))
        if dtype is None:
            raise UserInputError(f"input {t['name']!r}: cannot profile data type {t['data_type']}")
        out[t["name"]] = (
            rng.standard_normal(shape)
            if dtype in (np.float32, np.float16, np.float64)
            else rng.integers(0, 2, shape)
        ).astype(dtype)
    return out


def profile_model(
    server: TritonServer,
    gpu: FleetGpu,
    model: str,
    settings: ProfileSettings = ProfileSettings(),
    progress: Callable[[str], None] = lambda _: None,
) -> Profile:
    """Measure `model` on `gpu`'s server; load it first (and unload it after) if needed."""
    names = {m["name"] for m in server.repository_index()}
    if model not in names:
        raise UserInputError(
            f"model {model!r} is not in the repository of {gpu.server} "
            f"(it has {', '.join(sorted(names)) or 'no models'})"
        )
    probe = MemoryProbe(gpu)
    loaded_here = not server.is_model_ready(model)
    before = probe() if loaded_here else None
    if loaded_here:
        server.load(model)
    try:
        config = server.config(model)
        after_load = probe()
        weights = (after_load - before) if (before is not None and after_load is not None) else 0
        max_batch = int(config.get("max_batch_size", 0))
        batches = [b for b in settings.batches if max_batch == 0 or b <= max_batch]
        if max_batch == 0:
            batches = [1]
        rng = np.random.default_rng(0)
        points = []
        for b in batches:
            progress(f"{model} batch {b}")
            feed = _inputs(config, b, rng)
            warm_until = time.perf_counter() + settings.warmup_s
            for i in itertools.count():
                if i >= settings.warmup and time.perf_counter() >= warm_until:
                    break
                server.infer(model, feed)
            times = []
            for _ in range(settings.runs):
                t0 = time.perf_counter()
                server.infer(model, feed)
                times.append((time.perf_counter() - t0) * 1000.0)
            now = probe()
            held = (now - before) if (before is not None and now is not None) else weights
            points.append(
                BatchPoint(
                    batch=b,
                    latency_ms=round(float(np.percentile(times, settings.percentile)), 4),
                    memory_bytes=max(0, int(held)),
                )
            )
        reported = _reported_memory(server.statistics(model))
        if reported:
            weights = reported
            points = [
                BatchPoint(
                    batch=p.batch,
                    latency_ms=p.latency_ms,
                    memory_bytes=max(p.memory_bytes, reported),
                )
                for p in points
            ]
    finally:
        if loaded_here:
            with contextlib.suppress(ServerError):
                server.unload(model)
    return Profile(
        model=model, gpu_type=gpu.gpu_type, weights_bytes=max(0, int(weights)), batches=points
    )


def profile_fleet(
    gpus: Iterable[FleetGpu],
    models: list[str],
    settings: ProfileSettings = ProfileSettings(),
    progress: Callable[[str], None] = lambda _: None,
) -> list[Profile]:
    """One profile per (model, gpu type), measured on the first server of each type."""
    by_type: dict[str, FleetGpu] = {}
    for g in gpus:
        by_type.setdefault(g.gpu_type, g)
    profiles = []
    for gpu_type, gpu in by_type.items():
        with TritonServer(gpu.server) as server:
            if not server.is_live():
                raise ServerError(f"{gpu.server} ({gpu.id}): server is down")
            for model in models:
                progress(f"{gpu_type} {model}")
                profiles.append(profile_model(server, gpu, model, settings, progress))
    return profiles
