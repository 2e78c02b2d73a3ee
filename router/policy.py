"""Batching and drop policy of the router, as a synchronous state machine.

Implements Nexus's dispatch (Shen et al., SOSP 2019, §6.3 and the released
`GetBatchTaskSlidingWindow`): per session an earliest-deadline-first queue,
per GPU a dispatcher that visits its sessions round robin within the plan's
duty cycle, and batches formed by the sliding window with early drop. No I/O,
no clock, no asyncio: every event carries `now` (ms) and returns actions
(`router.types`), so the simulator and the asyncio router run this same code.
The plan's sessions and GPUs, and the estimates over them, are `router.plan_state`.

The decisions worth knowing (one shared queue per session, round robin within the
duty cycle, the sliding window, refusal at the door, probes, failure retried once)
are set out in docs/router-policy.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.dispatching import Dispatching, InFlight
from router.latency import LatencyModel
from router.plan_state import PlanState, SessionState
from router.prefix_batch import apportion
from router.settle_index import MARGIN, VISITS_KEPT, DoomIndex, catch_up, restart_visits
from router.types import (
    DEADLINE,
    DROP_MODES,
    EXPIRED,
    NO_SERVER,
    NO_SESSION,
    REJECTED,
    SERVER_DOWN,
    SHUTTING_DOWN,
    TOO_LARGE,
    Action,
    BatchStatus,
    Dispatch,
    Drop,
    DropMode,
    Request,
    WakeAt,
)

# A timer set for the instant a request becomes doomed must find it doomed,
# whatever the float rounding of deadline - l + l; otherwise it would re-arm
# for the same instant forever.
_EPS = 1e-6
# `_refusal`'s answer for an arrival that looks hopeless but goes out as a probe.
PROBE = "probe"
# Times a request whose batch failed goes back to its queue ("Failure", docs/router-policy.md).
RETRIES = 1


class BatchPolicy(Dispatching):
    """Events in, actions out. Not thread-safe; drivers call it from one thread.

    >>> policy = BatchPolicy(plan, ProfileSet.load("profiles.json").curves(), drop="early")
    >>> policy.arrival(now, request)  # -> [Dispatch(...)] or [Drop(...)] or [WakeAt(...)] or []
    """

    def __init__(
        self,
        plan: Plan,
        curves: Mapping[tuple[str, str], LatencyCurve],
        *,
        drop: DropMode = "early",
        alpha: float = 0.2,
        spread: float = 2.0,
        probe_ms: float = 250.0,
    ) -> None:
        if drop not in DROP_MODES:
            raise ValueError(f"drop must be one of {DROP_MODES}, got {drop!r}")
        self.mode: DropMode = drop
        self.latency = LatencyModel(curves, alpha=alpha, spread=spread)
        self.probe_ms = probe_ms
        # Down marks, in-flight batches and latency corrections outlive plan switches.
        self._down: set[str] = set()
        self._busy: dict[str, int] = {}
        self._inflight: dict[int, InFlight] = {}
        self._next_batch = 0
        self._wake: float | None = None
        self._closed = False
        self._install(PlanState.build(plan, self.latency, self._down))

    # ---- queries (for drivers, metrics and the HTTP layer) -------------------------

    def slo(self, session: str) -> float | None:
        s = self._plan.sessions.get(session)
        return None if s is None else s.slo

    def sessions(self) -> dict[str, str]:
        """session id → model."""
        return {sid: s.model for sid, s in self._plan.sessions.items()}

    def gpus(self) -> list[str]:
        return list(self._plan.gpus)

    def is_up(self, gpu: str) -> bool:
        return gpu not in self._down

    def queued(self, session: str | None = None) -> int:
        """Requests waiting (in one session, or all)."""
        if session is not None:
            s = self._plan.sessions.get(session)
            return 0 if s is None else len(s.queue)
        return sum(len(s.queue) for s in self._plan.sessions.values())

    def in_flight(self) -> list[Dispatch]:
        return [f.dispatch for f in self._inflight.values()]

    @property
    def closed(self) -> bool:
        return self._closed

    def request(
        self, id: int | str, session: str, now: float, payload: object = None, n_samples: int = 1
    ) -> Request:
        """A Request arriving now with deadline now + the session's SLO.

        An unknown session gets deadline = now; `arrival` then drops it `no_session`.
        """
        slo = self.slo(session)
        return Request(id, session, now, now + (slo or 0.0), n_samples, payload)

    def admit(self, now: float, session: str, deadline: float, n_samples: int = 1) -> str | None:
        """Why a request for `session` with `deadline` would be refused if it arrived now
        (a drop reason), or None. Pure: the HTTP layer asks before reading the body."""
        if self._closed:
            return SHUTTING_DOWN
        s = self._plan.sessions.get(session)
        if s is None:
            return NO_SESSION
        best = self._plan.fastest(s, n_samples, now)
        reason = self._refusal(now, s, deadline, n_samples, best)
        return None if reason == PROBE else reason

    # ---- events ---------------------------------------------------------------------

    def arrival(self, now: float, request: Request) -> list[Action]:
        if request.n_samples < 1:
            raise ValueError(f"request {request.id}: n_samples must be >= 1")
        if self._closed:
            return [Drop(request, SHUTTING_DOWN)]
        s = self._plan.sessions.get(request.session)
        if s is None:
            return [Drop(request, NO_SESSION)]
        best = self._plan.fastest(s, request.n_samples, now)
        reason = self._refusal(now, s, request.deadline, request.n_samples, best)
        if reason is None:
            pass
        elif reason == PROBE:
            return [self._probe(now, s, request)]
        else:
            return [Drop(request, reason)]
        s.queue.push(request)
        out: list[Action] = []
        k = len(self._visits)
        for gid in s.gpus:
            self._dispatch_on(now, gid, out, k)
        # Only this session's head can have moved earlier, so a full recompute is
        # needed only when its queue was empty (the new request is the head).
        if s.queue.is_head(request):
            self._touched.add(s.index)
            # `DoomIndex.doom_time` of this head: nothing it reads has changed since `best`.
            mode = self.mode
            t = None if mode == "none" else request.deadline
            if mode == "early":
                t = request.deadline - best  # type: ignore[operator]  # None was refused
            if t is not None and (self._wake is None or t < self._wake):
                self._wake = t
                out.append(WakeAt(t))
        if self._touched:
            self._doom.rekey(now)
        return out

    def batch_done(
        self, now: float, gpu: str, batch_id: int, status: BatchStatus = "ok"
    ) -> list[Action]:
        """The batch `batch_id` on `gpu` ended: `ok`, `failed` (GPU down, its requests
        retried once elsewhere) or `rejected` (its requests dropped, GPU up)."""
        f = self._inflight.pop(batch_id, None)
        if f is None:
            return []  # already settled (e.g. reported twice); nothing to do
        if f.dispatch.gpu != gpu:
            raise ValueError(f"batch {batch_id} ran on {f.dispatch.gpu}, not {gpu}")
        if self._busy.get(gpu) == batch_id:
            del self._busy[gpu]
            self._dirty.add(gpu)
        d = f.dispatch
        out: list[Action] = []
        if status == "ok" and d.suffixes:  # a prefix batch: each stage its share of the time
            for model, n, ms in apportion(d, now - f.started, self.latency, f.gpu_type):
                self.latency.observe(gpu, f.gpu_type, model, n, ms, now)
                self._fit_changed(now, gpu, model)
        elif status == "ok":
            self.latency.observe(gpu, f.gpu_type, d.model, d.n_samples, now - f.started, now)
            self._fit_changed(now, gpu, d.model)
        elif status == "rejected":
            out.extend(Drop(r, REJECTED) for r in d.requests)
        elif status == "failed":
            self._went_down(gpu)
            for r in d.requests:
                if r.attempts >= RETRIES and not self._closed:
                    out.append(Drop(r, SERVER_DOWN))
                    continue
                r.attempts += 1
                self._rehome(now, r, d.model, SERVER_DOWN, out)
        else:
            raise ValueError(f"unknown batch status {status!r}")
        self._settle(now, out)
        return out

    def timer(self, now: float) -> list[Action]:
        self._wake = None
        out: list[Action] = []
        self._settle(now, out)
        return out

    def mark_down(self, now: float, gpu: str) -> list[Action]:
        """Stop dispatching to `gpu`. A batch in flight there still reports `batch_done`."""
        self._went_down(gpu)
        out: list[Action] = []
        self._settle(now, out)
        return out

    def mark_up(self, now: float, gpu: str) -> list[Action]:
        was_down = gpu in self._down
        self._down.discard(gpu)
        g = self._plan.gpus.get(gpu)
        if g is not None:
            if was_down:
                g.parked = -1  # no visit it missed while down counts
            self._dirty.add(gpu)
            self._touched.update(self._plan.sessions[sid].index for sid, _ in g.sessions)
        out: list[Action] = []
        self._settle(now, out)
        return out

    def switch_plan(self, now: float, plan: Plan) -> list[Action]:
        """Install `plan`. Queued requests keep their session's queue; those of sessions
        that left the plan move to a session of the same model (nearest SLO) if one can
        still serve them in time, else are dropped `no_session`. Batches in flight finish
        normally; a GPU stays busy until its batch reports back."""
        new = PlanState.build(plan, self.latency, self._down)  # raises before any change
        orphans = new.adopt_queues(self._plan)
        self._install(new)
        out: list[Action] = []
        for r, model in orphans:
            self._rehome(now, r, model, NO_SESSION, out)
        self._settle(now, out)
        return out

    def shutdown(self, now: float) -> list[Action]:
        """Drop every queued request `shutting_down` and refuse new ones. Batches in
        flight may still finish; one that fails is dropped `shutting_down` too."""
        self._closed = True
        self._wake = None
        return [
            Drop(r, SHUTTING_DOWN) for s in self._plan.sessions.values() for r in s.queue.drain()
        ]

    # ---- internals ------------------------------------------------------------------

    def _refusal(
        self, now: float, s: SessionState, deadline: float, samples: int, best: float | None
    ) -> str | None:
        """Why an arrival to `s` is refused (a drop reason, or PROBE: hopeless, but send it
        as a probe), or None to queue it. `best`: `fastest(s, samples, now)`."""
        if best is None:
            up = any(g not in self._down for g in s.gpus)
            return NO_SERVER if not up else TOO_LARGE
        if self.mode == "lazy":
            return EXPIRED if deadline <= now else None
        if self.mode == "none":
            return None
        if now + best > deadline - _EPS:
            if deadline > now and self._probe_gpu(now, s, deadline, samples) is not None:
                return PROBE
            return EXPIRED if deadline <= now else DEADLINE
        if (
            s.queue
            # The bound settles most arrivals; only those near the line need the estimate.
            and now + self._plan.backlog_bound(now, s, samples) * (1 + 1e-9) + MARGIN > deadline
            and now + self._plan.backlog_ms(now, s, samples) > deadline
        ):
            return DEADLINE
        return None

    def _probe_gpu(self, now: float, s: SessionState, deadline: float, samples: int) -> str | None:
        """An idle up GPU to probe `s` on now, if a probe is due and the raw profile says the
        request could still be on time there; else None."""
        if now - s.last_dispatch < self.probe_ms:
            return None
        for gid in s.gpus:
            if gid in self._down or gid in self._busy:
                continue
            curve = self.latency.curve(s.model, self._plan.gpus[gid].gpu_type)
            if curve is not None and now + curve.latency(samples) <= deadline:
                return gid
        return None

    def _probe(self, now: float, s: SessionState, r: Request) -> Dispatch:
        gid = self._probe_gpu(now, s, r.deadline, r.n_samples)
        assert gid is not None
        g = self._plan.gpus[gid]
        if g.parked >= 0:
            catch_up(self._visits, g, len(self._visits))
        g.served.add(s.id)
        est = self.latency.estimate(gid, g.gpu_type, s.model, r.n_samples, now)
        return self._start(now, g, s, (r,), r.n_samples, est)

    def _hopeless(self, now: float, r: Request, fastest: float) -> bool:
        """Whether `r` must be dropped now under the drop mode, at best latency `fastest`."""
        if self.mode == "early":
            return now + fastest > r.deadline - _EPS
        if self.mode == "lazy":
            return r.deadline <= now
        return False

    def _rehome(self, now: float, r: Request, model: str, reason: str, out: list[Action]) -> None:
        """Put `r` back in a queue that can still serve it, or drop it with `reason`."""
        if self._closed:
            out.append(Drop(r, SHUTTING_DOWN))
            return
        s = self._plan.sessions.get(r.session)
        if s is None or s.model != model:
            s = self._plan.same_model(model, r.deadline - r.arrival)
        if s is None:
            out.append(Drop(r, NO_SESSION))
            return
        best = self._plan.fastest(s, r.n_samples, now)
        if best is None or self._hopeless(now, r, best):
            out.append(Drop(r, reason))
            return
        s.queue.push(r)
        self._touched.add(s.index)
        self._dirty.update(s.gpus)

    def _settle(self, now: float, out: list[Action]) -> None:
        """After any event but an arrival: prune queues, fill idle GPUs, re-arm the timer.

        As if every session were pruned and every GPU visited, but only those that can
        act are: sessions whose doom bound has come (`DoomIndex.due`) or whose GPU went down, and
        GPUs that became idle or up or got work (an idle up GPU otherwise has none).
        """
        if self._closed:
            return
        if len(self._visits) >= VISITS_KEPT:
            self._visits = restart_visits(self._visits, self._plan.gpus.values())
        k = len(self._visits)
        self._visits.append(now)
        if self._touched:
            self._doom.rekey(now)
        slist = self._slist
        if self._all:
            check: list[int] = list(range(len(slist)))
        else:
            due = self._doom.due(now)
            due.update(self._down_check)
            check = sorted(due)
        self._down_check.clear()
        for i in check:
            s = slist[i]
            if not s.queue:
                continue
            self._touched.add(i)
            if all(g in self._down for g in s.gpus):
                out.extend(Drop(r, SERVER_DOWN) for r in s.queue.drain())
                continue
            while s.queue:
                head = s.queue.head()
                best = self._plan.fastest(s, head.n_samples, now)
                if best is None:
                    out.append(Drop(s.queue.pop(), TOO_LARGE))
                elif self._hopeless(now, head, best):
                    out.append(Drop(s.queue.pop(), self._late_reason(now, head)))
                else:
                    break
        gpus = self._plan.gpus
        if self._all:
            dirty = list(gpus)
        else:
            dirty = sorted((x for x in self._dirty if x in gpus), key=lambda x: gpus[x].index)
        self._all = False
        self._dirty.clear()
        for gid in dirty:
            self._dispatch_on(now, gid, out, k, settle=True)
        if self._touched:
            self._doom.rekey(now)
        wake = self._doom.earliest(now)
        if wake is not None and wake != self._wake:
            out.append(WakeAt(wake))
        self._wake = wake

    # ---- bookkeeping that lets `_settle` touch only what can act -----------------------

    def _install(self, plan: PlanState) -> None:
        """Run `plan` from now on: every session re-keyed, every GPU visited next settle."""
        self._plan = plan
        self._slist = list(plan.sessions.values())
        for gid, g in plan.gpus.items():
            g.parked = -1 if gid in self._busy or gid in self._down else 0
        self._visits: list[float] = []
        self._doom = DoomIndex(plan, self._slist, self.mode)
        self._touched = self._doom.touched  # the same set: sessions to re-key
        self._dirty: set[str] = set()
        self._down_check: set[int] = set()
        self._all = True

    def _went_down(self, gpu: str) -> None:
        g = self._plan.gpus.get(gpu)
        if g is not None:
            if g.parked >= 0 and gpu not in self._down:
                catch_up(self._visits, g, len(self._visits))
            g.parked = -1
            idx = [self._plan.sessions[sid].index for sid, _ in g.sessions]
            self._touched.update(idx)
            self._down_check.update(idx)
        self._down.add(gpu)

    def _fit_changed(self, now: float, gpu: str, model: str) -> None:
        g = self._plan.gpus.get(gpu)
        if g is None:
            return
        self._plan.refit(g, model, now)
        sessions = self._plan.sessions
        for sid, _ in g.sessions:
            s = sessions[sid]
            if s.model == model:
                self._touched.add(s.index)
