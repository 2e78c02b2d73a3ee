"""Profiling a model on a live Triton server: latency per batch size and the memory it holds.

A search fed by measurements (as Triton Model Analyzer does). Per batch size, a
warm-up; then rounds: each round times `runs` gRPC `infer` calls of every batch
size, the sizes interleaved (alternating ascending and descending order), so that
a noisy second of a shared machine falls on every size rather than on one. The
rounds go on until each size's statistic, over all its samples so far, has moved
by less than a tolerance in each of the last rounds (`is_stable`), or a round or
time budget is spent.

The statistic is the median by default: l(b) is what the scheduler adds up into a
duty cycle (DESIGN.md, Σ l(b_s) ≤ d), a batch's usual time, and the median is the
quantile that settles fastest under noise; the p10 and p90 go beside it as the
spread. The measured statistics are then fitted non-decreasing in b by isotonic
regression (pool adjacent violators, the L2-closest non-decreasing sequence), so
that a noisy size cannot make a bigger batch look cheaper; memory(b) is made
non-decreasing by a running maximum, which never lowers a measurement.

Memory is Triton's `memory_usage` statistics where the backend reports it, else
on a GPU server the GPU memory of the server's processes (NVML's compute
processes), or the GPU's used memory from Triton's metrics (`nv_gpu_memory_used_bytes`),
else the resident memory of the server's process group (Python-backend stubs are
separate processes) — each measured as growth from before the model was loaded,
after each size's warm-up.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import psutil

from model_repo_tools.fleet import FleetGpu
from model_repo_tools.host import gpu_memory, process_group
from model_repo_tools.profiles import BatchPoint, Profile
from model_repo_tools.triton_client import TritonServer
from tnx.errors import ServerError, UserInputError

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)


@dataclass(slots=True, frozen=True)
class StabilityRule:
    """When the rounds have measured enough: every size's statistic moved by at most
    max(tolerance × its last value, floor_ms) in each of the last `patience` rounds,
    and at least `min_rounds` rounds ran."""

    tolerance: float = 0.01
    floor_ms: float = 0.01  # below it a move is timer and loopback jitter, not a change
    patience: int = 3  # one quiet round can be luck; three in a row rarely are
    min_rounds: int = 5


@dataclass(slots=True)
class ProfileSettings:
    batches: tuple[int, ...] = DEFAULT_BATCHES
    warmup: int = 10
    warmup_s: float = 0.3  # onnxruntime and the stub settle on a new shape over several runs
    runs: int = 5  # timed runs of each batch size in one round
    percentile: float = 50.0  # the statistic recorded as l(b); 50: the median
    stability: StabilityRule = field(default_factory=StabilityRule)
    min_s: float = 1.0  # rounds go on at least this long, so one noisy second is not all
    max_rounds: int = 200
    budget_s: float = 30.0  # per model, for the rounds after warm-up


# --- pure: round order, stability rule, monotone fits, the recorded rows -------------


def round_order(sizes: Sequence[int], index: int) -> tuple[int, ...]:
    """Batch sizes in the order round `index` times them: ascending, then descending, …,
    so that no size is always first after a pause or always last."""
    return tuple(sizes) if index % 2 == 0 else tuple(reversed(sizes))


def statistic(samples: Sequence[float], percentile: float) -> float:
    return float(np.percentile(samples, percentile))


def is_stable(history: Sequence[Mapping[int, float]], rule: StabilityRule) -> bool:
    """`history[i]`: batch size → statistic over all samples after round i."""
    if len(history) < max(rule.min_rounds, rule.patience + 1):
        return False
    recent = history[-(rule.patience + 1) :]
    return all(
        abs(now[b] - before[b]) <= max(rule.tolerance * before[b], rule.floor_ms)
        for before, now in itertools.pairwise(recent)
        for b in now
    )


def isotonic(values: Sequence[float], weights: Sequence[float] | None = None) -> list[float]:
    """The non-decreasing sequence closest to `values` in (weighted) least squares:
    pool adjacent violators, each pool taking its weighted mean."""
    pools: list[tuple[float, float, int]] = []  # (mean, weight, how many values)
    for y, w in zip(values, weights if weights is not None else [1.0] * len(values), strict=True):
        mean, weight, count = float(y), float(w), 1
        while pools and pools[-1][0] > mean:
            m, pw, n = pools.pop()
            mean = (m * pw + mean * weight) / (pw + weight)
            weight, count = pw + weight, n + count
        pools.append((mean, weight, count))
    return [mean for mean, _, count in pools for _ in range(count)]


def running_max(values: Iterable[int]) -> list[int]:
    """The least non-decreasing sequence that is nowhere below `values`: a size is not
    given less memory than a smaller size was seen to need."""
    return list(itertools.accumulate(values, max))


@dataclass(slots=True, frozen=True)
class Fitted:
    points: list[BatchPoint]
    measured_ms: dict[int, float]  # the statistic per size before the monotone fit


def fit_points(
    samples: Mapping[int, Sequence[float]], memory: Mapping[int, int], percentile: float
) -> Fitted:
    """Batch rows from each size's samples (ms) and the memory held after its warm-up."""
    sizes = sorted(samples)
    measured = {b: statistic(samples[b], percentile) for b in sizes}
    latency = isotonic([measured[b] for b in sizes], [len(samples[b]) for b in sizes])
    held = running_max(max(0, int(memory[b])) for b in sizes)
    points = [
        BatchPoint(
            batch=b,
            latency_ms=round(lat, 4),
            memory_bytes=mem,
            p10_ms=round(statistic(samples[b], 10), 4),
            p90_ms=round(statistic(samples[b], 90), 4),
            samples=len(samples[b]),
        )
        for b, lat, mem in zip(sizes, latency, held, strict=True)
    ]
    return Fitted(points, measured)


# --- the rounds: timing through an injected call and clock ---------------------------


@dataclass(slots=True, frozen=True)
class Measurement:
    samples: dict[int, list[float]]  # batch size → ms of each timed call
    rounds: int
    stable: bool
    elapsed_s: float


def measure_rounds(
    run_once: Callable[[int], float],
    sizes: Sequence[int],
    settings: ProfileSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Time `run_once(batch) -> ms` in interleaved rounds until stable (and `min_s` spent)
    or out of rounds or time."""
    samples: dict[int, list[float]] = {b: [] for b in sizes}
    history: list[dict[int, float]] = []
    start = clock()
    stable = False
    for index in range(settings.max_rounds):
        for b in round_order(sizes, index):
            samples[b].extend(run_once(b) for _ in range(settings.runs))
        history.append({b: statistic(samples[b], settings.percentile) for b in sizes})
        stable = is_stable(history, settings.stability)
        elapsed = clock() - start
        if (stable and elapsed >= settings.min_s) or elapsed >= settings.budget_s:
            break
    return Measurement(samples, len(history), stable, clock() - start)


# --- memory probes ---------------------------------------------------------------------


def _group_rss(pgid: int) -> int:
    """Resident bytes of every process in process group `pgid` (server + its stubs)."""
    total = 0
    for proc in process_group(pgid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def parse_gpu_metrics(text: str) -> int | None:
    """Used GPU bytes from Triton's Prometheus text; None where the metrics are dead
    (seen on an H200 machine: DCGM unavailable, total and used both read 0) or unreadable."""
    from prometheus_client.parser import text_string_to_metric_families

    sums = {"nv_gpu_memory_used_bytes": 0.0, "nv_gpu_memory_total_bytes": 0.0}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in sums:
                    sums[sample.name] += sample.value
    except ValueError:
        return None
    return int(sums["nv_gpu_memory_used_bytes"]) if sums["nv_gpu_memory_total_bytes"] > 0 else None


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
            pid = self.gpu.pid
            used = gpu_memory(p.pid for p in process_group(pid)) if pid else None
            if used is None and self.gpu.metrics:
                used = _gpu_memory_used(self.gpu.metrics)
            if used is not None:
                return used
        if self.gpu.pid and psutil.pid_exists(self.gpu.pid):
            return _group_rss(self.gpu.pid)
        return None


def _reported_memory(stats: dict) -> int | None:
    for m in stats.get("model_stats", []):
        usage = m.get("memory_usage") or []
        if usage:
            return sum(int(u.get("byte_size", 0)) for u in usage)
    return None


def _inputs(config: dict, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    from tritonclient.utils import triton_to_np_dtype

    batched = int(config.get("max_batch_size", 0)) > 0
    out = {}
    for t in config["input"]:
        dims = [int(d) if int(d) > 0 else 1 for d in t.get("dims", [])]
        shape = ([batch] if batched else []) + dims
        data_type = t.get("data_type", "TYPE_FP32")
        dtype = triton_to_np_dtype(data_type.removeprefix("TYPE_"))
        if dtype is None:  # TYPE_STRING among them: no random strings to send
            raise UserInputError(f"input {t['name']!r}: cannot profile data type {data_type}")
        out[t["name"]] = (
            rng.standard_normal(shape)
            if np.issubdtype(dtype, np.floating)
            else rng.integers(0, 2, shape)
        ).astype(dtype)
    return out


def _warm_up(
    infer: Callable[[], object], settings: ProfileSettings, clock: Callable[[], float]
) -> None:
    warm_until = clock() + settings.warmup_s
    for i in itertools.count():
        if i >= settings.warmup and clock() >= warm_until:
            return
        infer()


@dataclass(slots=True, frozen=True)
class ProfileRun:
    """A profile with how it was measured: `measured_ms` before the monotone fit."""

    profile: Profile
    measured_ms: dict[int, float]
    rounds: int
    stable: bool
    elapsed_s: float


def measure_model(
    server: TritonServer,
    gpu: FleetGpu,
    model: str,
    settings: ProfileSettings = ProfileSettings(),
    progress: Callable[[str], None] = lambda _: None,
) -> ProfileRun:
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
        feeds = {b: _inputs(config, b, rng) for b in batches}
        memory = {}
        for b in batches:  # ascending, so each size's memory includes what smaller ones held
            progress(f"{model} warm-up batch {b}")
            _warm_up(functools.partial(server.infer, model, feeds[b]), settings, time.perf_counter)
            now = probe()
            memory[b] = (now - before) if (before is not None and now is not None) else weights

        def run_once(b: int) -> float:
            t0 = time.perf_counter()
            server.infer(model, feeds[b])
            return (time.perf_counter() - t0) * 1000.0

        progress(f"{model} rounds over batches {', '.join(map(str, batches))}")
        measured = measure_rounds(run_once, batches, settings)
        fitted = fit_points(measured.samples, memory, settings.percentile)
        points = fitted.points
        reported = _reported_memory(server.statistics(model))
        if reported:
            weights = reported
            points = [
                p.model_copy(update={"memory_bytes": max(p.memory_bytes, reported)}) for p in points
            ]
    finally:
        if loaded_here:
            with contextlib.suppress(ServerError):
                server.unload(model)
    profile = Profile(
        model=model, gpu_type=gpu.gpu_type, weights_bytes=max(0, int(weights)), batches=points
    )
    return ProfileRun(
        profile, fitted.measured_ms, measured.rounds, measured.stable, measured.elapsed_s
    )


def measure_fleet(
    gpus: Iterable[FleetGpu],
    models: list[str],
    settings: ProfileSettings = ProfileSettings(),
    progress: Callable[[str], None] = lambda _: None,
) -> Iterator[ProfileRun]:
    """One profile per (model, gpu type), measured on the first server of each type."""
    by_type: dict[str, FleetGpu] = {}
    for g in gpus:
        by_type.setdefault(g.gpu_type, g)
    for gpu_type, gpu in by_type.items():
        with TritonServer(gpu.server) as server:
            if not server.is_live():
                raise ServerError(f"{gpu.server} ({gpu.id}): server is down")
            for model in models:
                progress(f"{gpu_type} {model}")
                yield measure_model(server, gpu, model, settings, progress)
