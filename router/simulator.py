"""A virtual-clock driver of the batching policy (SimPy-style: a heap of events).

The same `router.policy.BatchPolicy` that serves live traffic runs here against
a simulated backend: a batch of n samples on a GPU takes l(n) from the
profile, times a per-GPU speed factor, times optional seeded log-normal noise.
Arrivals are open-loop (Poisson by default, as in Nexus's and Clockwork's
evaluations); GPUs can be taken down and brought back on a script. The result
holds every request's outcome and summary statistics (goodput, drops by
reason, late answers, p50/p99), so drop policies can be compared on the same
trace: `compare_drop_modes(plan, curves, load=2.0)`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.policy import BatchPolicy
from router.prefix_batch import stages
from router.types import (
    Action,
    Answered,
    BatchStatus,
    Dispatch,
    Drop,
    DropMode,
    Dropped,
    Outcome,
    Request,
    WakeAt,
)


class Policy(Protocol):
    """What the simulator drives: `BatchPolicy`, or a baseline behind the same events."""

    @property
    def closed(self) -> bool: ...
    def arrival(self, now: float, request: Request) -> list[Action]: ...
    def batch_done(
        self, now: float, gpu: str, batch_id: int, status: BatchStatus = "ok"
    ) -> list[Action]: ...
    def timer(self, now: float) -> list[Action]: ...
    def mark_down(self, now: float, gpu: str) -> list[Action]: ...
    def mark_up(self, now: float, gpu: str) -> list[Action]: ...
    def switch_plan(self, now: float, plan: Plan) -> list[Action]: ...
    def shutdown(self, now: float) -> list[Action]: ...


LatencyFn = Callable[[str, str, int], float]
"""(gpu, model, samples) -> true batch time in ms."""

_DONE, _FAIL, _TIMER, _DOWN, _UP, _SWITCH, _SHUTDOWN = range(7)


@dataclass(slots=True, frozen=True)
class Outage:
    """`gpu` fails at `start` (its batch in flight fails) and is back at `end`."""

    gpu: str
    start: float
    end: float = math.inf


@dataclass(slots=True)
class SimStats:
    offered: int
    answered: int
    on_time: int
    late: int
    dropped: dict[str, int]
    duration_ms: float
    p50_ms: float
    p99_ms: float

    @property
    def goodput(self) -> float:
        """Answers within their SLO per second of offered load."""
        return 1000.0 * self.on_time / self.duration_ms if self.duration_ms > 0 else 0.0

    @property
    def drop_rate(self) -> float:
        return sum(self.dropped.values()) / self.offered if self.offered else 0.0

    @property
    def late_rate(self) -> float:
        """Late answers as a fraction of answers."""
        return self.late / self.answered if self.answered else 0.0


@dataclass(slots=True)
class SimResult:
    outcomes: list[Outcome]  # in arrival order
    dispatches: list[tuple[float, Dispatch]] = field(default_factory=list)
    drops: list[tuple[float, Drop]] = field(default_factory=list)
    batches: list[tuple[float, float, Dispatch, str]] = field(default_factory=list)
    """(started, ended, batch, "ok" | "failed") per batch that came back."""
    duration_ms: float = 0.0

    def stats(self) -> SimStats:
        lat = sorted(o.latency_ms for o in self.outcomes if isinstance(o, Answered))
        on_time = sum(1 for o in self.outcomes if isinstance(o, Answered) and not o.late)
        dropped: dict[str, int] = {}
        for o in self.outcomes:
            if isinstance(o, Dropped):
                dropped[o.reason] = dropped.get(o.reason, 0) + 1
        return SimStats(
            offered=len(self.outcomes),
            answered=len(lat),
            on_time=on_time,
            late=len(lat) - on_time,
            dropped=dropped,
            duration_ms=self.duration_ms,
            p50_ms=_quantile(lat, 0.50),
            p99_ms=_quantile(lat, 0.99),
        )


def _quantile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def profile_latency(
    plan: Plan,
    curves: Mapping[tuple[str, str], LatencyCurve],
    *,
    speed: float | Mapping[str, float] = 1.0,
    noise_cv: float = 0.0,
    seed: int = 0,
) -> LatencyFn:
    """True batch times: l(n) of the GPU's type x speed[gpu] x log-normal noise (mean 1)."""
    types = {g.gpu: g.gpu_type for g in plan.gpus}
    rng = random.Random(seed)
    sigma = math.sqrt(math.log1p(noise_cv**2)) if noise_cv > 0 else 0.0

    # l(n) at every integer n, as LatencyCurve.latency gives it (one lookup per batch).
    tables = {key: c.latency_table() for key, c in curves.items()}

    def latency(gpu: str, model: str, n: int) -> float:
        s = speed if isinstance(speed, int | float) else speed.get(gpu, 1.0)
        key = (model, types[gpu])
        table = tables[key]
        t = (table[n] if 0 < n < len(table) else curves[key].latency(n)) * s
        if sigma:
            t *= rng.lognormvariate(-sigma * sigma / 2, sigma)
        return t

    return latency


def planned(plan: Plan, by: str = "session") -> tuple[dict[str, float], dict[str, float]]:
    """({key: planned rate}, {key: tightest SLO ms}) over all of the plan's GPUs, keyed by
    session or, with `by="model"`, by model."""
    rates: dict[str, float] = {}
    slos: dict[str, float] = {}
    for g in plan.gpus:
        for a in g.allocations:
            key = a.model if by == "model" else a.session
            rates[key] = rates.get(key, 0.0) + a.rate
            slos[key] = min(slos.get(key, math.inf), a.slo_ms)
    return rates, slos


def poisson_arrivals(
    plan: Plan,
    duration_ms: float,
    *,
    load: float = 1.0,
    seed: int = 0,
    n_samples: int = 1,
) -> list[Request]:
    """Open-loop Poisson arrivals at `load` x each session's planned rate, for `duration_ms`."""
    rates, slos = planned(plan)
    rng = random.Random(seed)
    times: list[tuple[float, str]] = []
    for session in sorted(rates):
        per_ms = rates[session] * load / 1000.0
        if per_ms <= 0:
            continue
        t = rng.expovariate(per_ms)
        while t < duration_ms:
            times.append((t, session))
            t += rng.expovariate(per_ms)
    times.sort()
    return [Request(i, s, t, t + slos[s], n_samples) for i, (t, s) in enumerate(times)]


class Simulator:
    """Runs `policy` over a trace on a virtual clock. One use per instance."""

    def __init__(self, policy: Policy, latency: LatencyFn) -> None:
        self.policy = policy
        self._latency = latency
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self._timer_token = 0
        self._now = 0.0
        self._running: dict[str, tuple[Dispatch, int]] = {}  # gpu -> (batch, seq of its end)
        self._cancelled: set[int] = set()  # ends overtaken by an outage
        self._started: dict[int, float] = {}
        self._reqs: list[Request] = []
        self._outcomes: list[Outcome | None] = []  # by Request.slot: its place in _reqs
        self._result = SimResult([])

    def _push(self, t: float, kind: int, data: object) -> int:
        seq = next(self._seq)
        heapq.heappush(self._heap, (t, seq, kind, data))
        return seq

    def run(
        self,
        arrivals: Iterable[Request],
        *,
        outages: Iterable[Outage] = (),
        switches: Iterable[tuple[float, Plan]] = (),
        shutdown_at: float | None = None,
    ) -> SimResult:
        """Process every event; requests still queued at the end are dropped `shutting_down`.

        `switches` installs each plan at its time (`policy.switch_plan`).
        """
        reqs = self._reqs = list(arrivals)
        n_arr = len(reqs)
        self._outcomes = [None] * n_arr
        in_order = True
        for k in range(n_arr):
            r = reqs[k]
            r.slot = k
            if k and r.arrival < reqs[k - 1].arrival:
                in_order = False
        # Arrivals are read in time order beside the heap rather than pushed into it; at
        # equal times they come first, as if pushed before every other event. A trace already
        # in time order (they all are) is read as it is, as the stable sort would leave it.
        order = reqs if in_order else sorted(reqs, key=lambda r: r.arrival)
        i = 0
        for o in outages:
            self._push(o.start, _DOWN, o.gpu)
            if o.end < math.inf:
                self._push(o.end, _UP, o.gpu)
        for t, plan in switches:
            self._push(t, _SWITCH, plan)
        if shutdown_at is not None:
            self._push(shutdown_at, _SHUTDOWN, None)
        p = self.policy
        # The live policy by its class, so that compiled (router.native) the call is a
        # direct one; a baseline through the protocol.
        live = p if isinstance(p, BatchPolicy) else None
        heap = self._heap
        arrival, apply = p.arrival, self._apply
        while True:
            if i < n_arr and (not heap or order[i].arrival <= heap[0][0]):
                r = order[i]
                i += 1
                self._now = r.arrival
                actions = live.arrival(r.arrival, r) if live is not None else arrival(r.arrival, r)
                if actions:
                    apply(actions)
                continue
            if not heap:
                break
            t, seq, kind, data = heapq.heappop(heap)
            self._now = t
            if kind in (_DONE, _FAIL):
                if seq in self._cancelled:
                    continue
                d: Dispatch = data  # type: ignore[assignment]
                if self._running.get(d.gpu, (None,))[0] is d:
                    del self._running[d.gpu]
                started = self._started.pop(d.batch_id)
                status: BatchStatus = "ok" if kind == _DONE else "failed"
                self._result.batches.append((started, t, d, status))
                if kind == _DONE:
                    for r in d.requests:
                        self._record(r, Answered(r, None, d.gpu, started, t), "answered twice")
                if live is not None:
                    self._apply(live.batch_done(t, d.gpu, d.batch_id, status))
                else:
                    self._apply(p.batch_done(t, d.gpu, d.batch_id, status))
            elif kind == _TIMER:
                if data == self._timer_token:
                    self._apply(p.timer(t))
            elif kind == _DOWN:
                running = self._running.pop(data, None)  # type: ignore[call-overload]
                if running is not None:
                    # The batch in flight fails now instead of ending as scheduled.
                    d, end_seq = running
                    self._cancelled.add(end_seq)
                    self._push(t, _FAIL, d)
                self._apply(p.mark_down(t, data))  # type: ignore[arg-type]
            elif kind == _UP:
                self._apply(p.mark_up(t, data))  # type: ignore[arg-type]
            elif kind == _SWITCH:
                self._apply(p.switch_plan(t, data))  # type: ignore[arg-type]
            elif kind == _SHUTDOWN:
                self._apply(p.shutdown(t))
        if not p.closed:
            self._apply(p.shutdown(self._now))
        res = self._result
        outcomes = self._outcomes
        missing: list[int | str] = []
        for k in range(n_arr):
            got = outcomes[k]
            if got is None:
                missing.append(reqs[k].id)
            elif got.request is not reqs[k]:
                # `_record` trusts `slot`: a request of another run found a place by chance.
                raise AssertionError(f"request {got.request.id} is not one of this run's")
        if missing:
            raise AssertionError(f"requests without an outcome: {missing[:10]}")
        res.outcomes = self._outcomes  # type: ignore[assignment]  # no None left
        if order:
            res.duration_ms = order[-1].arrival - order[0].arrival
        return res

    def _record(self, r: Request, outcome: Outcome, twice: str) -> None:
        """`r`'s one outcome; a request not of this run, or a second outcome, is a bug."""
        k = r.slot
        if not 0 <= k < len(self._outcomes):
            raise AssertionError(f"request {r.id} is not one of this run's")
        if self._outcomes[k] is not None:
            raise AssertionError(f"request {r.id} {twice}")
        self._outcomes[k] = outcome

    def _apply(self, actions: list[Action]) -> None:
        now = self._now
        for a in actions:
            if isinstance(a, Dispatch):
                self._result.dispatches.append((now, a))
                self._started[a.batch_id] = now
                if a.suffixes:  # a prefix batch: the prefix, then each suffix
                    end = now + sum(self._latency(a.gpu, m, n) for m, n in stages(a))
                else:
                    end = now + self._latency(a.gpu, a.model, a.n_samples)
                self._running[a.gpu] = (a, self._push(end, _DONE, a))
            elif isinstance(a, Drop):
                self._result.drops.append((now, a))
                r = a.request
                self._record(r, Dropped(r, a.reason, now), "dropped after its outcome")
            elif isinstance(a, WakeAt):
                self._timer_token += 1
                self._push(a.time, _TIMER, self._timer_token)


def simulate(
    plan: Plan,
    curves: Mapping[tuple[str, str], LatencyCurve],
    arrivals: Iterable[Request],
    *,
    drop: DropMode = "early",
    speed: float | Mapping[str, float] = 1.0,
    noise_cv: float = 0.0,
    seed: int = 0,
    outages: Iterable[Outage] = (),
    alpha: float = 0.2,
    spread: float = 2.0,
) -> SimResult:
    """One run of a fresh policy over `arrivals` (true batch times per `profile_latency`).

    `alpha` and `spread` tune the policy's latency correction (`router.latency`);
    alpha 0 trusts the profile blindly.
    """
    policy = BatchPolicy(plan, curves, drop=drop, alpha=alpha, spread=spread)
    lat = profile_latency(plan, curves, speed=speed, noise_cv=noise_cv, seed=seed)
    return Simulator(policy, lat).run(arrivals, outages=outages)


def compare_drop_modes(
    plan: Plan,
    curves: Mapping[tuple[str, str], LatencyCurve],
    *,
    load: float = 1.0,
    duration_ms: float = 10_000.0,
    seed: int = 0,
    modes: Iterable[DropMode] = ("early", "lazy", "none"),
    noise_cv: float = 0.0,
    speed: float = 1.0,
) -> dict[str, SimStats]:
    """The same Poisson trace through each drop mode: {mode: stats}."""
    # Named keywords, not **kwargs: mypyc (router.native) cannot compile the latter here.
    trace = poisson_arrivals(plan, duration_ms, load=load, seed=seed)
    out: dict[str, SimStats] = {}
    for mode in modes:
        fresh = [Request(r.id, r.session, r.arrival, r.deadline, r.n_samples) for r in trace]
        run = simulate(plan, curves, fresh, drop=mode, seed=seed, noise_cv=noise_cv, speed=speed)
        out[mode] = run.stats()
    return out
