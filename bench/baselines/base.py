"""What every baseline policy shares: the plan's sessions and GPUs, batch ids, busy GPUs.

A baseline is driven like `router.policy.BatchPolicy` (events in with `now`, actions
out), so `router.simulator.Simulator` runs it unchanged. Baselines model no outages
or plan switches: `tnx simulate` drives neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.types import (
    EXPIRED,
    NO_SESSION,
    SERVER_DOWN,
    SHUTTING_DOWN,
    Action,
    BatchStatus,
    Dispatch,
    Drop,
    Request,
)


class Baseline:
    """Subclasses queue in `_enqueue`, start batches in `_fill` and list their queues."""

    def __init__(self, plan: Plan, curves: Mapping[tuple[str, str], LatencyCurve]) -> None:
        self.curves = dict(curves)
        self.gpu_type = {g.gpu: g.gpu_type for g in plan.gpus}
        self.model: dict[str, str] = {}
        self.slo: dict[str, float] = {}
        for g in plan.gpus:
            for a in g.allocations:
                self.model[a.session] = a.model
                self.slo[a.session] = min(self.slo.get(a.session, math.inf), a.slo_ms)
        self.busy: set[str] = set()
        self._inflight: dict[int, Dispatch] = {}
        self._next = 0
        self.closed = False

    def latency_ms(self, gpu: str, model: str, n: int) -> float:
        return self.curves[(model, self.gpu_type[gpu])].latency(n)

    def max_batch(self, gpu: str, model: str) -> int:
        return self.curves[(model, self.gpu_type[gpu])].max_batch

    # ---- the policy interface ---------------------------------------------------------

    def arrival(self, now: float, r: Request) -> list[Action]:
        if self.closed:
            return [Drop(r, SHUTTING_DOWN)]
        if r.session not in self.model:
            return [Drop(r, NO_SESSION)]
        if r.deadline <= now:
            return [Drop(r, EXPIRED)]
        out: list[Action] = []
        self._enqueue(now, r, out)
        return out

    def batch_done(
        self, now: float, gpu: str, batch_id: int, status: BatchStatus = "ok"
    ) -> list[Action]:
        d = self._inflight.pop(batch_id, None)
        if d is None:
            return []
        self.busy.discard(gpu)
        out: list[Action] = []
        if status != "ok":
            out.extend(Drop(r, SERVER_DOWN) for r in d.requests)
        self._done(now, d)
        if not self.closed:
            self._fill(now, gpu, out)
        return out

    def timer(self, now: float) -> list[Action]:
        return []

    def shutdown(self, now: float) -> list[Action]:
        self.closed = True
        return [Drop(r, SHUTTING_DOWN) for r in self._drain()]

    def mark_down(self, now: float, gpu: str) -> list[Action]:
        raise NotImplementedError("baselines model no outages")

    mark_up = mark_down

    def switch_plan(self, now: float, plan: Plan) -> list[Action]:
        raise NotImplementedError("baselines model no plan switches")

    # ---- for subclasses ---------------------------------------------------------------

    def _start(self, gpu: str, session: str, requests: tuple[Request, ...]) -> Dispatch:
        model = self.model[session]
        n = sum(r.n_samples for r in requests)
        d = Dispatch(gpu, session, model, requests, self._next, n, self.latency_ms(gpu, model, n))
        self._next += 1
        self.busy.add(gpu)
        self._inflight[d.batch_id] = d
        return d

    def _enqueue(self, now: float, r: Request, out: list[Action]) -> None:
        raise NotImplementedError

    def _fill(self, now: float, gpu: str, out: list[Action]) -> None:
        raise NotImplementedError

    def _done(self, now: float, d: Dispatch) -> None:
        """A batch came back (before `_fill` runs on its GPU)."""

    def _drain(self) -> list[Request]:
        """Remove and return every queued request."""
        raise NotImplementedError
