"""Incremental re-planning between epochs: keep placements, move as little as possible.

Nexus re-plans every epoch from the previous allocation rather than from scratch,
because loading a model on a GPU takes seconds. Given the previous plan and new
rates: every kept allocation stays on its GPU with its share of the session's new
rate (rates that grew are first absorbed where the session already runs), what
no longer fits is spread into other GPUs' slack, the remainder goes to new GPUs
by the policy, and the emptiest GPUs are dissolved when that frees one. The moves
are the (GPU, session) pairs loaded and unloaded relative to the previous plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from control.consolidate import dissolve, place_rate
from control.nodes import Node
from control.problem import Demand, GpuClass, Problem, TableCache
from control.tables import EPS
from control.types import Plan


@dataclass(slots=True, frozen=True)
class Move:
    gpu: str
    session: str
    model: str


@dataclass(slots=True)
class Moves:
    loads: list[Move] = field(default_factory=list)
    unloads: list[Move] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.loads) + len(self.unloads)


def diff(old: Plan | None, new: Plan) -> Moves:
    def pairs(p: Plan | None) -> dict[tuple[str, str], str]:
        if p is None:
            return {}
        return {(g.gpu, a.session): a.model for g in p.gpus for a in g.allocations}

    before, after = pairs(old), pairs(new)
    return Moves(
        loads=[Move(g, s, m) for (g, s), m in after.items() if (g, s) not in before],
        unloads=[Move(g, s, m) for (g, s), m in before.items() if (g, s) not in after],
    )


def _class_for(gpu: str, gpu_type: str, classes: list[GpuClass]) -> GpuClass | None:
    for c in classes:
        if c.ids is not None and gpu in c.ids:
            return c
    for c in classes:
        if c.ids is None and c.gpu_type == gpu_type:
            return c
    return None


def replan(
    previous: Plan,
    prob: Problem,
    tables: TableCache,
    policy: Callable[[list[Demand]], list[Node]],
) -> list[Node]:
    want = {d.id: d for d in prob.demands}
    before: dict[str, float] = {}
    for g in previous.gpus:
        for a in g.allocations:
            if a.session in want:
                before[a.session] = before.get(a.session, 0.0) + a.rate
    # Rates that shrank shrink on every GPU alike; growth is placed below.
    scale = {sid: min(1.0, want[sid].rate / r) if r > 0 else 1.0 for sid, r in before.items()}
    left = {sid: d.rate for sid, d in want.items()}
    nodes: list[Node] = []
    for g in previous.gpus:
        c = _class_for(g.gpu, g.gpu_type, prob.classes)
        if c is None:
            continue
        node = Node(c, g.duty_cycle_ms, gpu=g.gpu)
        for a in g.allocations:
            d = want.get(a.session)
            if d is None or d.model != a.model:
                continue
            t = tables.get(d.model, c.gpu_type)
            if t is None:
                continue
            here = Demand(d.id, d.model, d.slo, d.rate, t, c)
            rate = min(a.rate * scale[d.id], left[d.id])
            # The least batch, else the batch it had: a plan may hold a larger one (a
            # saturated shape, or a non-monotone profile's faster batch) that the least
            # one cannot replace, and an unchanged allocation must not move.
            if rate > EPS and (node.add(here, rate) or node.fit_at(here, rate, a.batch)):
                left[d.id] -= rate
        if node.pieces:
            nodes.append(node)
    # Growth: first where the session already runs (no load), then any slack.
    for sid, rate in list(left.items()):
        if rate <= EPS:
            continue
        d = want[sid]
        hosts = [n for n in nodes if sid in n.pieces]
        for n in hosts:
            if rate <= EPS:
                break
            here = n.pieces[sid].demand
            extra = min(rate, n.max_rate(here))
            if extra > EPS and n.add(here, extra):
                rate -= extra
        left[sid] = rate
    rest = []
    for sid, rate in left.items():
        if rate <= EPS:
            continue
        d = want[sid]
        rate = place_rate(d, rate, nodes, {})
        if rate > EPS:
            rest.append(Demand(d.id, d.model, d.slo, rate, d.table, d.gclass))
    nodes += policy(rest)
    # Every GPU may be dissolved here, saturated ones too (the policies keep theirs
    # out): so a re-plan of unchanged rates may move a session, but only to free a GPU.
    return dissolve(nodes)
