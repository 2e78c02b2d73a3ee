"""Batching and drop policy of the router, as a synchronous state machine.

Implements Nexus's dispatch (Shen et al., SOSP 2019, §6.3 and the released
`GetBatchTaskSlidingWindow`): per session an earliest-deadline-first queue,
per GPU a dispatcher that visits its sessions round robin within the plan's
duty cycle, and batches formed by the sliding window with early drop. No I/O,
no clock, no asyncio: every event carries `now` (ms) and returns actions
(`router.types`), so the simulator and the asyncio router run this same code.
The plan's sessions and GPUs, and the estimates over them, are `router.plan_state`.

Decisions worth knowing:

- **One shared queue per session.** When the plan splits a session over
  several GPUs, its requests wait in one EDF queue that any of those GPUs
  pulls from (each at its own planned batch size). Load then balances itself,
  a GPU going down strands nothing, and a plan switch moves whole queues.
- **Round robin within the duty cycle, work-conserving.** A free GPU first
  serves the sessions that have not had a batch in the current cycle (the
  plan's "one batch per session per cycle"), continuing round robin; if none
  of those has work it serves the others rather than idle.
- **Sliding window** (`early`): window = the head run of the queue holding at
  most the planned batch (fewer when the queue is short); while the head's
  deadline < now + l(window), drop the head and slide. The first window that
  can finish in time is the batch. l is `router.latency`'s corrected estimate.
  Between dispatches a timer drops a head that could no longer finish even
  alone on the fastest up GPU, so a doomed request is answered at once.
  `lazy` drops only what has expired; `none` never drops for time.
- **Refused at the door** (`early`): an arrival is refused at once when the
  queue ahead of it already holds more than its session's GPUs can serve
  before its deadline (a fluid estimate: queued samples over the samples per
  ms its up GPUs serve, each at its planned batch, sharing its round with the
  other sessions that have work). The HTTP layer asks `admit` before reading
  the body, so under overload the cheapest answer is the 503, and what is
  admitted is served in time instead of being dropped at the head later.
- **Probes.** When the latency model says even a fresh request cannot make
  its deadline, the session still sends one real batch every `probe_ms` (if
  the raw profile says it could be on time), so the model keeps seeing real
  batch times and a stale belief cannot lock the session out.
- **Failure, retried once.** A failed batch (an error, or a timeout: the
  server is dead or hung) marks its GPU down; each of its requests goes back
  to its session's queue, to be served by another up GPU, if it has not
  failed before and that GPU could still finish it in time; else it is
  dropped `server_down`. Once, not more: a request that fails twice is more
  likely to be what kills servers than unlucky, and the retry must not turn
  one dead server into a storm on the others. Sessions left without an up
  GPU drop their queue `server_down`; arrivals to them are dropped `no_server`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.latency import LatencyModel
from router.plan_state import GpuState, PlanState, SessionState
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
# Times a request whose batch failed goes back to its queue (see "Failure" above).
RETRIES = 1


@dataclass(slots=True)
class _InFlight:
    dispatch: Dispatch
    gpu_type: str
    started: float


class BatchPolicy:
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
        self._plan = PlanState.build(plan, self.latency, self._down)
        self._busy: dict[str, int] = {}
        self._inflight: dict[int, _InFlight] = {}
        self._next_batch = 0
        self._wake: float | None = None
        self._closed = False

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
        reason = self._refusal(now, s, deadline, n_samples)
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
        reason = self._refusal(now, s, request.deadline, request.n_samples)
        if reason == PROBE:
            return [self._probe(now, s, request)]
        if reason is not None:
            return [Drop(request, reason)]
        s.queue.push(request)
        out: list[Action] = []
        for gid in s.gpus:
            self._dispatch_on(now, gid, out)
        # Only this session's head can have moved earlier, so a full recompute is
        # needed only when its queue was empty (the new request is the head).
        if s.queue and s.queue.head() is request:
            t = self._doom_time(s, now)
            if t is not None and (self._wake is None or t < self._wake):
                self._wake = t
                out.append(WakeAt(t))
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
        d = f.dispatch
        out: list[Action] = []
        if status == "ok":
            self.latency.observe(gpu, f.gpu_type, d.model, d.n_samples, now - f.started, now)
        elif status == "rejected":
            out.extend(Drop(r, REJECTED) for r in d.requests)
        elif status == "failed":
            self._down.add(gpu)
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
        self._down.add(gpu)
        out: list[Action] = []
        self._settle(now, out)
        return out

    def mark_up(self, now: float, gpu: str) -> list[Action]:
        self._down.discard(gpu)
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
        self._plan = new
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

    def _refusal(self, now: float, s: SessionState, deadline: float, samples: int) -> str | None:
        """Why an arrival to `s` is refused (a drop reason, or PROBE: hopeless, but send it
        as a probe), or None to queue it."""
        best = self._plan.fastest(s, samples, now)
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
        if s.queue and now + self._plan.backlog_ms(now, s, samples) > deadline:
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

    @staticmethod
    def _late_reason(now: float, r: Request) -> str:
        return EXPIRED if r.deadline <= now else DEADLINE

    def _doom_time(self, s: SessionState, now: float) -> float | None:
        """When the head of `s` becomes hopeless (None: never, or empty)."""
        if not s.queue or self.mode == "none":
            return None
        head = s.queue.head()
        if self.mode == "lazy":
            return head.deadline
        best = self._plan.fastest(s, head.n_samples, now)
        return None if best is None else head.deadline - best

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

    def _settle(self, now: float, out: list[Action]) -> None:
        """After any event but an arrival: prune queues, fill idle GPUs, re-arm the timer."""
        if self._closed:
            return
        for s in self._plan.sessions.values():
            if not s.queue:
                continue
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
        for gid in self._plan.gpus:
            self._dispatch_on(now, gid, out)
        wake = min(
            (t for s in self._plan.sessions.values() if (t := self._doom_time(s, now)) is not None),
            default=None,
        )
        if wake is not None and wake != self._wake:
            out.append(WakeAt(wake))
        self._wake = wake

    def _dispatch_on(self, now: float, gid: str, out: list[Action]) -> None:
        """If `gid` is up and idle, start its next batch (round robin, duty cycle first)."""
        if gid in self._busy or gid in self._down or self._closed:
            return
        g = self._plan.gpus[gid]
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
            return self._start(now, g, s, q.take(n), samples, est)
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
        self._inflight[bid] = _InFlight(d, g.gpu_type, now)
        s.last_dispatch = now
        return d
