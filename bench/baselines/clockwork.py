"""Clockwork's scheduler (Gujarati et al., "Serving DNNs like Clockwork: Performance
Predictability from the Bottom Up", OSDI 2020, §5).

Latency is predictable (the profile), so the controller plans every action against
deadlines: requests wait earliest-deadline-first; when a GPU is free it takes, among
the sessions whose model it holds (the plan's placement), the one with the earliest
deadline at its head, and runs the largest batch whose l(b) still ends by that
deadline. A request that cannot finish in time even alone is dropped when it is
reached. No duty cycle, no planned batch size, no admission at the door.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from bench.baselines.base import Baseline
from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.types import DEADLINE, EXPIRED, Action, Drop, Request


class Clockwork(Baseline):
    def __init__(self, plan: Plan, curves: Mapping[tuple[str, str], LatencyCurve]) -> None:
        super().__init__(plan, curves)
        self.gpus_of: dict[str, list[str]] = {}
        self.sessions_on: dict[str, list[str]] = {}
        for g in plan.gpus:
            for a in g.allocations:
                self.gpus_of.setdefault(a.session, []).append(g.gpu)
                self.sessions_on.setdefault(g.gpu, []).append(a.session)
        # Within a session the SLO is fixed, so arrival order is deadline order.
        self.queue: dict[str, deque[Request]] = {s: deque() for s in self.gpus_of}

    def _enqueue(self, now: float, r: Request, out: list[Action]) -> None:
        self.queue[r.session].append(r)
        for gpu in self.gpus_of[r.session]:
            if gpu not in self.busy:
                self._fill(now, gpu, out)
                return

    def _fill(self, now: float, gpu: str, out: list[Action]) -> None:
        best: str | None = None
        best_deadline = 0.0
        for s in self.sessions_on.get(gpu, ()):
            q = self.queue[s]
            model = self.model[s]
            while q and now + self.latency_ms(gpu, model, q[0].n_samples) > q[0].deadline:
                r = q.popleft()
                out.append(Drop(r, EXPIRED if r.deadline <= now else DEADLINE))
            if q and (best is None or q[0].deadline < best_deadline):
                best, best_deadline = s, q[0].deadline
        if best is None:
            return
        q = self.queue[best]
        model = self.model[best]
        top = self.max_batch(gpu, model)
        batch = [q.popleft()]
        n = batch[0].n_samples
        while q and n + q[0].n_samples <= top:
            if now + self.latency_ms(gpu, model, n + q[0].n_samples) > best_deadline:
                break
            n += q[0].n_samples
            batch.append(q.popleft())
        out.append(self._start(gpu, best, tuple(batch)))

    def _drain(self) -> list[Request]:
        out = [r for q in self.queue.values() for r in q]
        for q in self.queue.values():
            q.clear()
        return out
