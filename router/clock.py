"""Clocks for the asyncio driver: the real one, and a virtual one that jumps (SimPy-style).

The driver asks a clock two things: the time now (ms, a plain float) and to call
something at a later time. `LoopClock` answers with `time.monotonic` and the
event loop's timers; `VirtualClock` keeps its own heap of timers and advances
only when told to, so a test can run the asyncio driver over a trace of
minutes in milliseconds and get the same decisions as the simulator.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Milliseconds on a monotonic scale."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` (on the event loop's thread) at or after `when` ms."""
        ...


class LoopClock:
    """Real time: `time_fn` seconds (monotonic by default) as milliseconds."""

    def __init__(self, time_fn: Callable[[], float] = time.monotonic) -> None:
        self._time = time_fn

    def now(self) -> float:
        return self._time() * 1000.0

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        delay = max(0.0, (when - self.now()) / 1000.0)
        return asyncio.get_running_loop().call_later(delay, callback)


class _VirtualTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Time that stands still until `run` advances it to the next timer.

    Between timers the event loop is given `settle` turns, so every task woken
    by the last callback reaches its next await on the clock before time moves.
    """

    def __init__(self, start: float = 0.0, settle: int = 20) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _VirtualTimer, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._settle = settle

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        t = _VirtualTimer()
        heapq.heappush(self._heap, (max(when, self._now), next(self._seq), t, callback))
        return t

    async def sleep(self, ms: float) -> None:
        """A coroutine that resumes `ms` virtual milliseconds from now."""
        fut = asyncio.get_running_loop().create_future()
        self.call_at(self._now + ms, lambda: fut.done() or fut.set_result(None))
        await fut

    async def run(self, until: float | None = None) -> None:
        """Fire timers in time order until none is left (or the next is after `until`)."""
        await self._yield()
        while self._heap:
            when, _, timer, callback = self._heap[0]
            if until is not None and when > until:
                break
            heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = when
            callback()
            await self._yield()
        if until is not None:
            self._now = max(self._now, until)

    async def _yield(self) -> None:
        for _ in range(self._settle):
            await asyncio.sleep(0)
