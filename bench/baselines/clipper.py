"""Clipper's adaptive batching (Crankshaw et al., "Clipper: A Low-Latency Online
Prediction Serving System", NSDI 2017, §4.3).

Each GPU holds one model (a Clipper model container); the plan's GPUs are shared out
among models in proportion to the GPUs each needs at its best SLO-feasible batch
(at least one each while GPUs last). A request joins the FIFO queue of the least-loaded
replica of its model. A free replica sends the head of its queue, up to its current
maximum batch, at once. The maximum batch follows AIMD: +1 after a batch whose requests
all met their deadlines, x0.9 after one that missed. Clipper drops nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from bench.baselines.base import Baseline
from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.simulator import planned
from router.types import NO_SERVER, Action, Dispatch, Drop, Request

STEP = 1
BACKOFF = 0.9


class Clipper(Baseline):
    def __init__(self, plan: Plan, curves: Mapping[tuple[str, str], LatencyCurve]) -> None:
        super().__init__(plan, curves)
        rates, slo = planned(plan, by="model")
        gpus = [g.gpu for g in plan.gpus]
        need = {m: rates[m] / self._throughput(gpus[0], m, slo[m]) for m in sorted(rates)}
        self.replicas: dict[str, list[str]] = {m: [] for m in need}
        for m, gpu in zip(_share(need, len(gpus)), gpus, strict=True):
            self.replicas[m].append(gpu)
        self.queue: dict[str, deque[Request]] = {g: deque() for g in gpus}
        self.limit: dict[str, float] = {g: 1.0 for g in gpus}
        self.load: dict[str, int] = {g: 0 for g in gpus}  # queued + running samples

    def _throughput(self, gpu: str, model: str, slo: float) -> float:
        c = self.curves[(model, self.gpu_type[gpu])]
        ok = [b for b in c.batches if 2 * c.latency(b) <= slo] or [c.batches[0]]
        return max(c.throughput(b) for b in ok)

    def _enqueue(self, now: float, r: Request, out: list[Action]) -> None:
        reps = self.replicas.get(self.model[r.session])
        if not reps:
            out.append(Drop(r, NO_SERVER))
            return
        gpu = min(reps, key=self.load.__getitem__)
        self.queue[gpu].append(r)
        self.load[gpu] += r.n_samples
        if gpu not in self.busy:
            self._fill(now, gpu, out)

    def _fill(self, now: float, gpu: str, out: list[Action]) -> None:
        q = self.queue[gpu]
        if not q or gpu in self.busy:
            return
        model = self.model[q[0].session]
        cap = min(max(1, int(self.limit[gpu])), self.max_batch(gpu, model))
        batch: list[Request] = []
        n = 0
        while q and n + q[0].n_samples <= cap:
            n += q[0].n_samples
            batch.append(q.popleft())
        if not batch:  # a request larger than the limit still goes, alone
            batch.append(q.popleft())
        out.append(self._start(gpu, batch[0].session, tuple(batch)))

    def _done(self, now: float, d: Dispatch) -> None:
        self.load[d.gpu] -= d.n_samples
        if all(now <= r.deadline for r in d.requests):
            self.limit[d.gpu] = min(self.limit[d.gpu] + STEP, self.max_batch(d.gpu, d.model))
        else:
            self.limit[d.gpu] = max(1.0, self.limit[d.gpu] * BACKOFF)

    def _drain(self) -> list[Request]:
        out = [r for q in self.queue.values() for r in q]
        for q in self.queue.values():
            q.clear()
        return out


def _share(need: dict[str, float], gpus: int) -> list[str]:
    """The model of each of `gpus` GPUs: one per model (neediest first) while they last,
    then each next GPU to the model with the most need per GPU it has (D'Hondt)."""
    order = sorted(need, key=lambda m: (-need[m], m))
    count = {m: 0 for m in need}
    for m in order[:gpus]:
        count[m] = 1
    for _ in range(gpus - sum(count.values())):
        count[max(order, key=lambda m: need[m] / count[m])] += 1
    return [m for m in order for _ in range(count[m])]
