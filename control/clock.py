"""Clocks for the control plane's driver: real time, and a manual one that moves when told.

The driver asks a clock three things: the time now (monotonic seconds, a plain
float, what the epoch decision and fleet health are fed), the wall time (Unix
seconds, for the `applied_at` of plans people read), and to sleep. `RealClock`
answers with `time` and asyncio; `ManualClock` stands still until `advance`, so
a test drives epochs, probes and drains of the real service in no time
(SimPy-style). The router keeps its own millisecond clock (`router/clock.py`):
imports point from control to router, not back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for records people read."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Time that stands still until `advance`; its wall time is `wall_start` + now."""

    def __init__(self, start: float = 0.0, wall_start: float = 1.0e9) -> None:
        self._now = start
        self._wall0 = wall_start - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall0 + self._now

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def advance(self, seconds: float, settle: int = 20) -> None:
        """Move time `seconds` on, waking each sleeper at its time in order; between two
        wake-ups the event loop gets `settle` turns, so woken tasks reach their next await."""
        until = self._now + seconds
        await _turns(settle)
        while self._sleepers and self._sleepers[0][0] <= until:
            when, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not fut.done():
                fut.set_result(None)
            await _turns(settle)
        self._now = until


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)
