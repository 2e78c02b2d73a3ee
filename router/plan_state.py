"""The batching policy's picture of a plan: per session its EDF queue, GPUs and planned
batches; per GPU its duty cycle and round-robin place; and the estimates read from it
with the latency model (`router.latency`): a session's fastest up GPU, and the fluid
backlog that refuses an arrival at the door. Built from a plan and checked against the
profiles; `router.policy.BatchPolicy` builds a new one at each plan switch and moves the
queues over. Pure, like the policy: every estimate takes `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from control.prefix_rule import prefix_batches
from control.types import Plan
from model_repo_tools.prefix_names import parts
from model_repo_tools.profiles import LatencyCurve
from router.latency import Estimator, LatencyModel
from router.queues import EdfQueue
from router.types import Request
from tnx.errors import UserInputError


def _prefix_groups(
    g: GpuState,
    sessions: dict[str, SessionState],
    split: dict[str, tuple[str, str]],
    latency: LatencyModel,
) -> dict[str, str]:
    """Session → prefix for the sessions on `g` that run as one prefix batch, by the rule
    the validator counts them by (control.prefix_rule)."""
    allocs = [(sid, sessions[sid].model, b, sessions[sid].slo) for sid, b in g.sessions]
    gpu_type = g.gpu_type

    def curve(model: str) -> LatencyCurve | None:
        return latency.curve(model, gpu_type)

    runs = prefix_batches(allocs, g.duty_cycle, split, curve)
    return {sid: p for p, run in runs.items() for sid in run.sessions}


@dataclass(slots=True)
class SessionState:
    id: str
    model: str
    slo: float
    gpus: list[str]
    max_samples: int  # the largest request every GPU of the session can run alone
    ests: list[Estimator] = field(default_factory=list)  # l̂ of its model on each of `gpus`
    batches: dict[str, int] = field(default_factory=dict)  # gpu -> planned batch
    queue: EdfQueue = field(default_factory=EdfQueue)
    last_dispatch: float = -math.inf
    index: int = 0  # place in the plan's session order
    version: int = 0  # of its entry in the policy's doom heap (older entries are stale)


@dataclass(slots=True)
class GpuState:
    id: str
    gpu_type: str
    duty_cycle: float
    sessions: list[tuple[str, int]]  # (session, planned batch), in plan order
    rr: int = 0
    cycle_start: float = -math.inf
    served: set[str] = field(default_factory=set)
    index: int = 0  # place in the plan's gpu order
    # While idle and up: the first of the policy's settle visits not yet applied to the
    # duty cycle (`router.settle_index.catch_up`); -1 while busy or down.
    parked: int = 0
    # Upper bounds of l̂(planned batch) per session here, and of their sum, valid until a
    # latency fit on this GPU changes (`PlanState.backlog_bound`); None: to recompute.
    bounds: dict[str, float] | None = None
    round_bound: float = 0.0
    # Sessions here that run as one prefix batch (control.prefix_rule): session → the
    # prefix model (router.prefix_batch).
    prefixes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PlanState:
    """A plan as the policy runs it, and the estimates that read it with the latency model
    and the set of GPUs that are down (both the policy's own: they outlive the plan)."""

    sessions: dict[str, SessionState]
    gpus: dict[str, GpuState]
    latency: LatencyModel
    down: set[str]
    # model → (prefix, suffix) for the models served split (model_repo_tools.shared_prefix).
    split: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, plan: Plan, latency: LatencyModel, down: set[str]) -> PlanState:
        """The sessions and GPUs of `plan`; UserInputError when the plan lists a GPU twice,
        gives a session two models, or runs a model or batch its GPU type has no profile
        for."""
        sessions: dict[str, SessionState] = {}
        gpus: dict[str, GpuState] = {}
        for gp in plan.gpus:
            if gp.gpu in gpus:
                raise UserInputError(f"plan: gpu {gp.gpu} listed twice")
            allocs: list[tuple[str, int]] = []
            for a in gp.allocations:
                curve = latency.curve(a.model, gp.gpu_type)
                if curve is None:
                    raise UserInputError(
                        f"plan: gpu {gp.gpu} runs {a.model} but profiles have no "
                        f"{a.model} on {gp.gpu_type}"
                    )
                if a.batch > curve.max_batch:
                    raise UserInputError(
                        f"plan: gpu {gp.gpu} session {a.session} batch {a.batch} is above "
                        f"the profiled {curve.max_batch} for {a.model} on {gp.gpu_type}"
                    )
                s = sessions.get(a.session)
                if s is None:
                    s = sessions[a.session] = SessionState(
                        a.session, a.model, a.slo_ms, [], curve.max_batch
                    )
                elif s.model != a.model:
                    raise UserInputError(
                        f"plan: session {a.session} is {s.model} on one gpu, {a.model} on {gp.gpu}"
                    )
                s.slo = min(s.slo, a.slo_ms)
                s.max_samples = min(s.max_samples, curve.max_batch)
                if gp.gpu not in s.gpus:
                    s.gpus.append(gp.gpu)
                    s.ests.append(latency.estimator(gp.gpu, gp.gpu_type, a.model))
                    s.batches[gp.gpu] = a.batch
                    allocs.append((a.session, a.batch))
            gpus[gp.gpu] = GpuState(gp.gpu, gp.gpu_type, gp.duty_cycle_ms, allocs)
        for i, s in enumerate(sessions.values()):
            s.index = i
        split = parts(latency.models())
        for i, g in enumerate(gpus.values()):
            g.index = i
            g.prefixes = _prefix_groups(g, sessions, split, latency)
        return cls(sessions, gpus, latency, down, split)

    def adopt_queues(self, old: PlanState) -> list[tuple[Request, str]]:
        """Give each session the queue it had in `old`; return the requests of the sessions
        that left (or changed model), each with its model."""
        orphans: list[tuple[Request, str]] = []
        for sid, o in old.sessions.items():
            n = self.sessions.get(sid)
            if n is not None and n.model == o.model:
                n.queue = o.queue
            else:
                orphans.extend((r, o.model) for r in o.queue.drain())
        return orphans

    def fastest(self, s: SessionState, samples: int, now: float) -> float | None:
        """Smallest corrected l(samples) over the session's up GPUs; None if none can."""
        best: float | None = None
        if samples > s.max_samples:
            return None
        down, ests = self.down, s.ests
        for k, gid in enumerate(s.gpus):
            if gid in down:
                continue
            est = ests[k].estimate(samples, now)
            if best is None or est < best:
                best = est
        return best

    def fastest_bound(self, s: SessionState, samples: int, now: float) -> float | None:
        """An upper bound of `fastest(s, samples, t)` for every t >= now until a GPU of `s`
        goes down or its latency fit for `s`'s model changes: each estimate only moves
        from its value now toward the profile as the fit's weight fades."""
        if samples > s.max_samples:
            return None
        best: float | None = None
        down, ests = self.down, s.ests
        for k, gid in enumerate(s.gpus):
            if gid in down:
                continue
            e = ests[k]
            est = e.estimate(samples, now)
            base = e.profiled(samples)
            bound = est if est > base else base
            if best is None or bound < best:
                best = bound
        return best

    def backlog_bound(self, now: float, s: SessionState, samples: int) -> float:
        """An upper bound of `backlog_ms(now, s, samples)`, cheap: every session of each
        GPU counted as having work, each estimate at its bound (`fastest_bound`)."""
        rate = 0.0
        finish = math.inf
        down, gpus = self.down, self.gpus
        for gid in s.gpus:
            if gid in down:
                continue
            g = gpus[gid]
            bounds = g.bounds
            if bounds is None:
                bounds = self._bounds(g, now)
            rate += s.batches[gid] / max(g.round_bound, 1e-3)
            own = bounds[s.id]
            if own < finish:
                finish = own
        return s.queue.samples / rate + finish if rate > 0 else math.inf

    def _bounds(self, g: GpuState, now: float) -> dict[str, float]:
        g.bounds = {sid: self._bound(g, sid, sb, now) for sid, sb in g.sessions}
        g.round_bound = sum(g.bounds.values())
        return g.bounds

    def refit(self, g: GpuState, model: str, now: float) -> None:
        """The latency fit of `model` on `g` changed: renew the bounds that read it."""
        if g.bounds is None:
            return
        for sid, sb in g.sessions:
            if self.sessions[sid].model == model:
                g.bounds[sid] = self._bound(g, sid, sb, now)
        g.round_bound = sum(g.bounds.values())

    def _bound(self, g: GpuState, sid: str, batch: int, now: float) -> float:
        e = self.latency.estimator(g.id, g.gpu_type, self.sessions[sid].model)  # checked by build
        if not e.monotone:
            return math.inf  # a smaller batch than planned is no faster only on a monotone curve
        est = e.estimate(batch, now)
        base = e.profiled(batch)
        return est if est > base else base

    def backlog_ms(self, now: float, s: SessionState, samples: int) -> float:
        """Predicted time until a request of `samples` joining the back of `s`'s queue is
        answered: the queue ahead served at the rate the session's up GPUs give it, then its
        own batch on the fastest of them. A GPU's round is `s`'s planned batch and, of each
        other session with work, the batch it would take now (its queue, at most its planned
        batch): counting a full planned batch for a session with one request queued refused
        part of every burst (BENCHMARKS.md, "Simulator")."""
        rate = 0.0  # samples per ms
        finish = math.inf
        ahead = s.queue.samples
        sessions = self.sessions
        for k, gid in enumerate(s.gpus):
            if gid in self.down:
                continue
            g = self.gpus[gid]
            b = s.batches[gid]
            mine = s.ests[k]
            round_ms = 0.0
            for sid, sb in g.sessions:
                if sid == s.id:
                    round_ms += mine.estimate(sb, now)
                    continue
                other = sessions[sid]
                queued = other.queue.samples
                if queued:
                    turn = sb if queued > sb else queued
                    round_ms += self.latency.estimate(gid, g.gpu_type, other.model, turn, now)
            rate += b / max(round_ms, 1e-3)
            own = min(b, ahead + samples)
            finish = min(finish, mine.estimate(own, now))
        return ahead / rate + finish if rate > 0 else math.inf

    def same_model(self, model: str, slo: float) -> SessionState | None:
        cands = [s for s in self.sessions.values() if s.model == model]
        if not cands:
            return None
        return min(cands, key=lambda s: (abs(s.slo - slo), s.id))
