"""Triton's dynamic batcher (NVIDIA Triton Inference Server, "Dynamic Batcher" in the
model configuration guide), one model instance per (GPU, session) of the plan.

A load balancer spreads each session's requests over its GPUs by planned rate (smooth
weighted round robin). Per instance: `max_batch_size` = `preferred_batch_size` = the
planned batch, `max_queue_delay` = the GPU's duty cycle (the time the planned batch
takes to arrive), and a queue policy that rejects a request queued past its SLO
(`default_timeout_microseconds`). A batch is ready when the queue holds the preferred
size, or its oldest request has waited `max_queue_delay` (then it takes what there
is). Instances on one GPU take turns (the oldest ready request first); no early drop.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping

from bench.baselines.base import Baseline
from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.types import EXPIRED, Action, BatchStatus, Drop, Request, WakeAt


class _Instance:
    __slots__ = ("session", "batch", "queue", "weight", "credit")

    def __init__(self, session: str, batch: int, weight: float) -> None:
        self.session = session
        self.batch = batch
        self.queue: deque[Request] = deque()
        self.weight = weight
        self.credit = 0.0


class TritonBatcher(Baseline):
    def __init__(self, plan: Plan, curves: Mapping[tuple[str, str], LatencyCurve]) -> None:
        super().__init__(plan, curves)
        self.delay: dict[str, float] = {}
        self.on_gpu: dict[str, list[_Instance]] = {}
        self.of_session: dict[str, list[tuple[str, _Instance]]] = {}
        for g in plan.gpus:
            self.delay[g.gpu] = g.duty_cycle_ms
            for a in g.allocations:
                inst = _Instance(a.session, a.batch, a.rate)
                self.on_gpu.setdefault(g.gpu, []).append(inst)
                self.of_session.setdefault(a.session, []).append((g.gpu, inst))
        self._wakes: list[tuple[float, str]] = []
        self._wake: float | None = None

    def _enqueue(self, now: float, r: Request, out: list[Action]) -> None:
        choices = self.of_session[r.session]
        total = sum(i.weight for _, i in choices) or 1.0
        for _, i in choices:
            i.credit += i.weight
        gpu, inst = max(choices, key=lambda c: c[1].credit)
        inst.credit -= total
        inst.queue.append(r)
        if gpu not in self.busy:
            self._fill(now, gpu, out)
            self._rearm(out)

    def batch_done(
        self, now: float, gpu: str, batch_id: int, status: BatchStatus = "ok"
    ) -> list[Action]:
        out = super().batch_done(now, gpu, batch_id, status)
        self._rearm(out)
        return out

    def timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        self._wake = None
        while self._wakes and self._wakes[0][0] <= now:
            _, gpu = heapq.heappop(self._wakes)
            if gpu not in self.busy:
                self._fill(now, gpu, out)
        self._rearm(out)
        return out

    def _rearm(self, out: list[Action]) -> None:
        if self._wakes and self._wakes[0][0] != self._wake and not self.closed:
            self._wake = self._wakes[0][0]
            out.append(WakeAt(self._wake))

    def _fill(self, now: float, gpu: str, out: list[Action]) -> None:
        ready: _Instance | None = None
        wait_until: float | None = None
        for inst in self.on_gpu.get(gpu, ()):
            q = inst.queue
            while q and q[0].deadline <= now:  # the queue policy's timeout = SLO
                out.append(Drop(q.popleft(), EXPIRED))
            if not q:
                continue
            due = q[0].arrival + self.delay[gpu]
            if len(q) >= inst.batch or now >= due:
                if ready is None or q[0].arrival < ready.queue[0].arrival:
                    ready = inst
            elif wait_until is None or due < wait_until:
                wait_until = due
        if ready is None:
            if wait_until is not None:
                heapq.heappush(self._wakes, (wait_until, gpu))
            return
        q = ready.queue
        n = min(len(q), ready.batch)
        out.append(self._start(gpu, ready.session, tuple(q.popleft() for _ in range(n))))

    def _drain(self) -> list[Request]:
        out = [r for insts in self.on_gpu.values() for i in insts for r in i.queue]
        for insts in self.on_gpu.values():
            for i in insts:
                i.queue.clear()
        return out
