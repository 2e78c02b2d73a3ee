"""Batch formation for `router.policy`: which session an idle GPU serves next (round robin,
the duty cycle's unserved sessions first) and Nexus's sliding window over its queue (Shen
et al., SOSP 2019, §6.3; docs/router-policy.md); for sessions sharing a prefix on the GPU,
one prefix batch mixing their windows (Nexus §5, router.prefix_batch).

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


@dataclass(slots=True, init=False)
class InFlight:
    """A batch sent and not yet done. (Its own __init__: see router.types, Dispatch.)"""

    dispatch: Dispatch
    gpu_type: str
    started: float

    def __init__(self, dispatch: Dispatch, gpu_type: str, started: float) -> None:
        self.dispatch = dispatch
        self.gpu_type = gpu_type
        self.started = started


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
    _all: bool  # the next settle visits every GPU (declared for mypyc: router.native)
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
                prefix = g.prefixes.get(sid)
                if prefix is not None:
                    d = self._form_group(now, g, prefix, out)
                else:
                    d = self._form(now, g, self._plan.sessions[sid], batch, out)
                if d is not None:
                    g.rr = (i + 1) % n
                    g.served.add(sid)
                    if prefix is not None:  # the whole group had its batch this cycle
                        g.served.update(x for x, p in g.prefixes.items() if p == prefix)
                    out.append(d)
                    return

    def _form(
        self, now: float, g: GpuState, s: SessionState, batch: int, out: list[Action]
    ) -> Dispatch | None:
        """Nexus's sliding window over `s`'s queue for a batch of at most `batch` samples."""
        q = s.queue
        if not q:
            return None
        self._touched.add(s.index)
        e = self.latency.estimator(g.id, g.gpu_type, s.model)  # profiled: PlanState.build
        while q:
            n, samples = q.window(batch)
            head = q.head()
            if samples > e.max_batch:
                out.append(Drop(q.pop(), TOO_LARGE))
                continue
            est = e.estimate(samples, now)
            if self.mode == "early" and now + est > head.deadline:
                out.append(Drop(q.pop(), self._late_reason(now, head)))
                continue
            if self.mode == "lazy" and head.deadline <= now:
                out.append(Drop(q.pop(), EXPIRED))
                continue
            return self._start(now, g, s, q.take(n, samples), samples, est)
        return None

    def _form_group(
        self, now: float, g: GpuState, prefix: str, out: list[Action]
    ) -> Dispatch | None:
        """A prefix batch (router.prefix_batch): each member session's sliding window at its
        planned batch, as many members as the prefix's profile holds, judged on the whole
        path l̂_P(Σ) + Σ l̂_S; a head that cannot finish it in time is dropped (`early`)."""
        split = self._plan.split
        members = [
            (self._plan.sessions[sid], b) for sid, b in g.sessions if g.prefixes.get(sid) == prefix
        ]
        p_curve = self.latency.curve(prefix, g.gpu_type)
        assert p_curve is not None  # PlanState checked both parts are profiled
        for s, _ in members:
            if s.queue:
                self._touched.add(s.index)
        while True:
            windows: list[tuple[SessionState, int, int]] = []
            total = 0
            for s, b in members:
                q = s.queue
                if not q:
                    continue
                n, samples = q.window(b)
                suffix = self.latency.curve(split[s.model][1], g.gpu_type)
                if suffix is None or samples > suffix.max_batch or samples > p_curve.max_batch:
                    out.append(Drop(q.pop(), TOO_LARGE))
                    break
                if total + samples <= p_curve.max_batch:
                    windows.append((s, n, samples))
                    total += samples
            else:
                if not windows:
                    return None
                est = self.latency.estimate(g.id, g.gpu_type, prefix, total, now) + sum(
                    self.latency.estimate(g.id, g.gpu_type, split[s.model][1], k, now)
                    for s, _, k in windows
                )
                late = [
                    s
                    for s, _, _ in windows
                    if (self.mode == "early" and now + est > s.queue.head().deadline)
                    or (self.mode == "lazy" and s.queue.head().deadline <= now)
                ]
                for s in late:
                    head = s.queue.head()
                    out.append(Drop(s.queue.pop(), self._late_reason(now, head)))
                if late:
                    continue
                requests: list[Request] = []
                suffixes = []
                for s, n, k in windows:
                    taken = s.queue.take(n, k)
                    requests.extend(taken)
                    suffixes.append((split[s.model][1], len(taken)))
                    s.last_dispatch = now
                first = windows[0][0]
                return self._start(
                    now, g, first, tuple(requests), total, est, prefix, tuple(suffixes)
                )

    def _start(
        self,
        now: float,
        g: GpuState,
        s: SessionState,
        requests: tuple[Request, ...],
        samples: int,
        est: float,
        model: str | None = None,
        suffixes: tuple[tuple[str, int], ...] = (),
    ) -> Dispatch:
        bid = self._next_batch
        self._next_batch += 1
        d = Dispatch(g.id, s.id, model or s.model, requests, bid, samples, est, suffixes)
        self._busy[g.id] = bid
        g.parked = -1
        self._inflight[bid] = InFlight(d, g.gpu_type, now)
        s.last_dispatch = now
        return d
