"""GPU health reports from the router to the control plane: `POST {control}/v1/fleet/reports`.

The router sees a server fail first: a batch that errs or times out. Each
failed batch becomes `{"gpu", "healthy": false, "error"}`, at most one per GPU
per second (a dead server fails every batch sent to it until the policy stops
sending); a GPU the health probe brings back becomes `{"gpu", "healthy": true}`.
`HealthReports` decides (pure, fed the driver's events with `now`);
`ControlPoster` sends, fire-and-forget: the router never waits on, or fails
because of, the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.driver import BatchEnded, Event, GpuUp

log = logging.getLogger(__name__)

Report = dict[str, Any]


@dataclass(slots=True)
class HealthReports:
    """Turn the driver's events into reports for `post`; use `on_event` as its hook."""

    post: Callable[[Report], None]
    interval_ms: float = 1000.0
    _last: dict[str, float] = field(default_factory=dict)  # gpu -> last unhealthy report

    def on_event(self, now: float, event: Event) -> None:
        if isinstance(event, BatchEnded) and event.status == "failed":
            gpu = event.dispatch.gpu
            last = self._last.get(gpu)
            if last is not None and now - last < self.interval_ms:
                return
            self._last[gpu] = now
            lines = event.error.strip().splitlines() or ["batch failed"]
            self.post({"gpu": gpu, "healthy": False, "error": lines[0][:300]})
        elif isinstance(event, GpuUp):
            self._last.pop(event.gpu, None)  # its next failure is news again
            self.post({"gpu": event.gpu, "healthy": True})


class ControlPoster:
    """Posts reports to `{control}/v1/fleet/reports`, in order, one at a time, from a
    task of its own. A report that fails (control plane down, slow, refusing) is logged
    at debug and forgotten; beyond `max_queued` waiting, new ones are dropped."""

    def __init__(self, control: str, timeout_s: float = 1.0, max_queued: int = 100) -> None:
        self.url = control.rstrip("/") + "/v1/fleet/reports"
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[Report] = asyncio.Queue(max_queued)
        self._worker: asyncio.Task[None] | None = None

    def __call__(self, report: Report) -> None:
        try:
            self._queue.put_nowait(report)
        except asyncio.QueueFull:
            log.debug("report to %s dropped: %d waiting", self.url, self._queue.qsize())
            return
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=self._timeout_s) as client:
            while True:
                report = await self._queue.get()
                try:
                    r = await client.post(self.url, json=report)
                    if r.status_code >= 300:
                        log.debug("report to %s: HTTP %d", self.url, r.status_code)
                except httpx.HTTPError as err:
                    log.debug("report to %s failed: %s", self.url, err)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
