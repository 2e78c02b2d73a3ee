"""Batch formation for `router.policy`: which session an idle GPU serves next (round robin,
the duty cycle's unserved sessions first) and Nexus's sliding window over its queue (Shen
et al., SOSP 2019, §6.3; docs/router-policy.md).

A mixin of `BatchPolicy`, apart because it is one step of the state machine with its own
reading: it uses the policy's state (plan, marks, in-flight batches) and changes only
what starting a batch changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.latency import LatencyModel
from router.plan_state import GpuState, PlanState, SessionState
from router.settle_index import catch_up
from router.types import DEADLINE, EXPIRED, TOO_LARGE, Action, Dispatch, Drop, DropMode, Request


@dataclass(slots=True)
class InFlight:
    """A batch sent and not yet done."""

    dispatch: Dispatch
    gpu_type: str
    started: float


class Dispatching:
    """Starting batches on idle GPUs; `BatchPolicy` is the one class that mixes it in."""

    # The policy's state that forming a batch reads and writes (set by BatchPolicy).
    mode: DropMode
    latency: LatencyModel
    _plan: PlanState
    _busy: dict[str, int]
    _down: set[str]
    _inflight: dict[int, InFlight]
    _next_batch: int
    _closed: bool
    _visits: list[float]
    _touched: set[int]

    @staticmethod
    def _late_reason(now: float, r: Request) -> str:
        return EXPIRED if r.deadline <= now else DEADLINE

    def _dispatch_on(
        self, now: float, gid: str, out: list[Action], k: int, settle: bool = False
    ) -> None:
        """If `gid` is up and idle, start its next batch (round robin, duty cycle first).
        `k`: the number of settle visits before this one (`settle`: this one is a settle's)."""
        if gid in self._busy or gid in self._down or self._closed:
            return
        g = self._plan.gpus[gid]
        if g.parked >= 0:
            catch_up(self._visits, g, k)
        g.parked = k + 1 if settle else k
        n = len(g.sessions)
        if n == 0:
            return
        if now >= g.cycle_start + g.duty_cycle:
            g.cycle_start = now
            g.served.clear()
        for second_round in (False, True):
            for k in range(n):
                i = (g.rr + k) % n
                sid, batch = g.sessions[i]
                if (sid in g.served) != second_round:
                    continue
                d = self._form(now, g, self._plan.sessions[sid], batch, out)
                if d is not None:
                    g.rr = (i + 1) % n
                    g.served.add(sid)
                    out.append(d)
                    return

    def _form(
        self, now: float, g: GpuState, s: SessionState, batch: int, out: list[Action]
    ) -> Dispatch | None:
        """Nexus's sliding window over `s`'s queue for a batch of at most `batch` samples."""
        q = s.queue
        if q:
            self._touched.add(s.index)
        while q:
            n, samples = q.window(batch)
            head = q.head()
            curve = self.latency.curve(s.model, g.gpu_type)
            if curve is None or samples > curve.max_batch:
                out.append(Drop(q.pop(), TOO_LARGE))
                continue
            est = self.latency.estimate(g.id, g.gpu_type, s.model, samples, now)
            if self.mode == "early" and now + est > head.deadline:
                out.append(Drop(q.pop(), self._late_reason(now, head)))
                continue
            if self.mode == "lazy" and head.deadline <= now:
                out.append(Drop(q.pop(), EXPIRED))
                continue
            return self._start(now, g, s, q.take(n, samples), samples, est)
        return None

    def _start(
        self,
        now: float,
        g: GpuState,
        s: SessionState,
        requests: tuple[Request, ...],
        samples: int,
        est: float,
    ) -> Dispatch:
        bid = self._next_batch
        self._next_batch += 1
        d = Dispatch(g.id, s.id, s.model, requests, bid, samples, est)
        self._busy[g.id] = bid
        g.parked = -1
        self._inflight[bid] = InFlight(d, g.gpu_type, now)
        s.last_dispatch = now
        return d
