"""Triton's statistics extension, counted where the router stands.

The JSON of `GET /v2/models[/{m}[/versions/{v}]]/stats`
(server/docs/protocol/extension_statistics.md), so perf_analyzer and
`tritonclient.http.get_inference_statistics` read the router as they read Triton:

- `success`: requests answered with a result, and their time from arrival to answer;
- `fail`: requests answered without one (dropped, refused at the door, shut down),
  and their time;
- `queue`: arrival to dispatch of the answered requests;
- `compute_infer`: per answered request, the time its batch took (the whole call to
  the server, its own queue and transfers included), as Triton counts per request;
- `inference_count`: samples answered; `execution_count` and `batch_stats`: batches
  that came back, per batch size (samples);
- `compute_input`, `compute_output`: as many as `compute_infer` (perf_analyzer
  refuses counts that differ) but no time, which the router cannot tell apart from
  the call; `cache_hit`, `cache_miss`: zero.

Counts are cumulative from the router's start; tools take differences between two
reads. Requests are counted per session and summed per model when read, because an
outcome names its session, not its model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from router.driver import BatchEnded, Event
from router.types import Answered, Dispatch, Dropped, Outcome

_NS_PER_MS = 1_000_000


class Duration:
    """Triton's StatisticDuration: how many, and their total time in nanoseconds."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ms: float, n: int = 1) -> None:
        self.count += n
        self.ns += int(max(ms, 0.0) * _NS_PER_MS)

    def merge(self, other: Duration) -> None:
        self.count += other.count
        self.ns += other.ns

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class _Requests:
    __slots__ = ("success", "fail", "queue", "compute_infer", "samples")

    def __init__(self) -> None:
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_infer = Duration()
        self.samples = 0


class _Batches:
    __slots__ = ("executions", "by_size", "last_ms")

    def __init__(self) -> None:
        self.executions = 0
        self.by_size: dict[int, Duration] = {}
        self.last_ms = 0  # wall clock, ms since the epoch, of the last batch that came back


class ModelStats:
    """Cumulative per-model statistics, fed by the router's outcome and event hooks."""

    __slots__ = ("_requests", "_batches", "_model_of")

    def __init__(self) -> None:
        self._requests: dict[str, _Requests] = {}  # per session
        self._batches: dict[str, _Batches] = {}  # per model
        self._model_of: dict[str, str] = {}  # session -> model, learned from dispatches

    def on_outcome(self, outcome: Outcome) -> None:
        r = outcome.request
        acc = self._requests.get(r.session)
        if acc is None:
            acc = self._requests[r.session] = _Requests()
        if isinstance(outcome, Answered):
            acc.success.add(outcome.finished - r.arrival)
            acc.queue.add(outcome.dispatched - r.arrival)
            acc.compute_infer.add(outcome.finished - outcome.dispatched)
            acc.samples += r.n_samples
        elif isinstance(outcome, Dropped):
            acc.fail.add(outcome.at - r.arrival)

    def on_refused(self, session: str) -> None:
        """A request answered at the door, before it was queued: a failure of no duration."""
        acc = self._requests.get(session)
        if acc is None:
            acc = self._requests[session] = _Requests()
        acc.fail.add(0.0)

    def on_event(self, event: Event) -> None:
        if isinstance(event, Dispatch):
            self._model_of[event.session] = event.model
        elif isinstance(event, BatchEnded) and event.status == "ok":
            d = event.dispatch
            acc = self._batches.get(d.model)
            if acc is None:
                acc = self._batches[d.model] = _Batches()
            acc.executions += 1
            size = acc.by_size.get(d.n_samples)
            if size is None:
                size = acc.by_size[d.n_samples] = Duration()
            size.add(event.finished - event.started)
            acc.last_ms = time.time_ns() // _NS_PER_MS

    def model_json(self, model: str, version: str, sessions: Mapping[str, str]) -> dict[str, Any]:
        """One entry of `model_stats`; `sessions` maps the plan's sessions to their models
        (sessions seen in dispatches are remembered, also after they leave the plan)."""
        owners = {**self._model_of, **sessions}
        total = _Requests()
        for session in _sessions_of(model, owners):
            acc = self._requests.get(session)
            if acc is not None:
                total.success.merge(acc.success)
                total.fail.merge(acc.fail)
                total.queue.merge(acc.queue)
                total.compute_infer.merge(acc.compute_infer)
                total.samples += acc.samples
        batches = self._batches.get(model) or _Batches()
        zero = Duration().json()
        return {
            "name": model,
            "version": version,
            "last_inference": batches.last_ms,
            "inference_count": total.samples,
            "execution_count": batches.executions,
            "inference_stats": {
                "success": total.success.json(),
                "fail": total.fail.json(),
                "queue": total.queue.json(),
                "compute_input": {"count": total.compute_infer.count, "ns": 0},
                "compute_infer": total.compute_infer.json(),
                "compute_output": {"count": total.compute_infer.count, "ns": 0},
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": d.count, "ns": 0},
                    "compute_infer": d.json(),
                    "compute_output": {"count": d.count, "ns": 0},
                }
                for size, d in sorted(batches.by_size.items())
            ],
        }


def _sessions_of(model: str, owners: Mapping[str, str]) -> Iterable[str]:
    return (s for s, m in owners.items() if m == model)
