"""Prefix batching in the router (Nexus, Shen et al., SOSP 2019, §5): one batch of the shared
prefix mixing the requests of several sessions, then each session's suffix batch on the
prefix's outputs, on the same GPU.

The policy (`router.dispatching`) forms such a batch as one `Dispatch` whose `suffixes`
say which requests go to which suffix; this module holds what reads it: the path's stages
with their sample counts, the share of an observed path time each stage is credited with
(the latency model's corrections stay per model), and `run_path`, the driver's I/O. The
suffix models' inputs are the prefix's outputs by name (`exporters.prefix_split`), so a
request's slice of the prefix answer is its suffix request as is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from router.backend import Backend
from router.latency import LatencyModel
from router.types import Dispatch, Request


def suffix_groups(d: Dispatch) -> list[tuple[str, tuple[Request, ...]]]:
    """(suffix model, its requests) of a prefix batch, in order."""
    out, start = [], 0
    for model, k in d.suffixes:
        out.append((model, d.requests[start : start + k]))
        start += k
    return out


def stages(d: Dispatch) -> list[tuple[str, int]]:
    """(model, samples) of each batch the dispatch runs: the prefix, then each suffix."""
    if not d.suffixes:
        return [(d.model, d.n_samples)]
    return [(d.model, d.n_samples)] + [
        (m, sum(r.n_samples for r in rs)) for m, rs in suffix_groups(d)
    ]


def apportion(
    d: Dispatch, elapsed_ms: float, latency: LatencyModel, gpu_type: str
) -> list[tuple[str, int, float]]:
    """(model, samples, ms) per stage: the observed time of the whole path shared out in
    proportion to the stages' profiled times on `gpu_type` (none where one is unknown)."""
    parts = stages(d)
    base: list[float] = []
    for m, n in parts:
        c = latency.curve(m, gpu_type)
        if c is None or n > c.max_batch:
            return []
        base.append(c.latency(n))
    total = sum(base)
    return [(m, n, elapsed_ms * b / total) for (m, n), b in zip(parts, base, strict=True)]


async def run_path(backend: Backend, d: Dispatch, timeout_s: float | None = None) -> Sequence[Any]:
    """Run a prefix batch: the prefix on every request, then the suffixes side by side,
    each on its requests' slices of the prefix's answer; one result per request, in order."""
    shared = await backend.infer(d.gpu, d.model, d.requests, timeout_s=timeout_s)
    calls = []
    start = 0
    for model, rs in suffix_groups(d):
        cut = [replace(r, payload=shared[start + k]) for k, r in enumerate(rs)]
        calls.append(backend.infer(d.gpu, model, cut, timeout_s=timeout_s))
        start += len(rs)
    answers = await asyncio.gather(*calls)
    return [a for group in answers for a in group]
