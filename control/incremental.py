"""Incremental re-planning between epochs: keep placements, move as little as possible.

Nexus re-plans every epoch from the previous allocation rather than from scratch,
because loading a model on a GPU takes seconds. Given the previous plan and new
rates: every GPU keeps its id, its cycle and its sessions, each with its share of
the session's new rate; what a session gained is absorbed where it already runs
(control.growth: whole first, shortening a cycle or evicting one session where that
saves moves); what no GPU that runs it takes goes whole into another GPU's room
(found through a SlackIndex), and only the remainder to new GPUs, by the policy. The
moves so far are required: they serve the new rates. Then, within a move budget,
the least full GPUs are dissolved where that frees one (control.migrate) and, where
rates changed and enough budget is left, planned afresh a window at a time
(control.repack); what the budget held back is reported. It never falls back to a
fresh plan, which would move nearly every allocation. The moves are the (GPU,
session) pairs loaded and unloaded relative to the previous plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from control.consolidate import place_rate
from control.growth import absorb
from control.migrate import HeldBack, consolidate, node_moves
from control.nodes import Node
from control.problem import Demand, GpuClass, Problem, TableCache
from control.repack import repack
from control.slack_index import SlackIndex
from control.tables import EPS
from control.types import Plan

# The default move budget of a re-plan: freeing GPUs may bring the re-plan's moves up to
# this share of the previous plan's allocations, counting those the new rates need, and
# always gets MOVE_MIN. Trades GPUs against model loads per epoch (what is held back is
# freed at later epochs); judged on BENCHMARKS.md "Fleet scale" (moves after ±10% and
# ±30% changes, issue 15's limit of 15%) and the "after ±30%" columns of "Scheduler".
MOVE_SHARE, MOVE_MIN = 0.10, 16
# What no GPU that runs it can take is tried on the SCAN roomiest GPUs (best fit among
# them), else goes to new GPUs: after a ±30% change at 10,000 sessions hundreds of GPUs
# have some room and trying each cost most of the re-plan's time; judged on "Fleet
# scale" re-plan time and GPUs (BENCHMARKS.md).
SCAN = 48
# Windows of GPUs are planned afresh (control.repack) only where the budget left can pay
# for one: a window of 64 GPUs freed 3 for ~340 moves at 2,000 sessions (BENCHMARKS.md,
# "Fleet scale"); below it they would be held back after costing a policy run each.
REPACK_MIN_BUDGET = 300


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


Pairs = dict[tuple[str, str], str]  # (GPU, session) → model


def diff(old: Plan | None, new: Plan) -> Moves:
    def pairs(p: Plan | None) -> Pairs:
        if p is None:
            return {}
        return {(g.gpu, a.session): a.model for g in p.gpus for a in g.allocations}

    return moves_between(pairs(old), pairs(new))


def node_pairs(nodes: list[Node]) -> Pairs:
    """The (GPU, session) pairs of named nodes (those `emit` wrote)."""
    return {(n.gpu or "", sid): p.demand.model for n in nodes for sid, p in n.pieces.items()}


def moves_between(before: Pairs, after: Pairs) -> Moves:
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


@dataclass(slots=True)
class Replanned:
    nodes: list[Node]
    required: int  # moves needed to serve the new rates (before any consolidation)
    spent: int  # moves spent, within the budget, to free GPUs
    budget: int
    held_back: HeldBack
    before: Pairs  # the previous plan's (GPU, session) pairs, read once here


def move_budget(previous: Plan, required: int, max_moves: int | None) -> int:
    """Moves to spend freeing GPUs: `max_moves`, or by default what MOVE_SHARE of the
    previous plan's allocations leaves beyond the `required` ones, at least MOVE_MIN."""
    if max_moves is not None:
        return max(0, max_moves)
    allocs = sum(len(g.allocations) for g in previous.gpus)
    return max(MOVE_MIN, math.ceil(MOVE_SHARE * allocs) - required)


def replan(
    previous: Plan,
    prob: Problem,
    tables: TableCache,
    policy: Callable[[list[Demand]], list[Node]],
    max_moves: int | None = None,
    target: int | None = None,
) -> Replanned:
    """Re-plan `prob` from `previous`; `target`: the GPUs a fresh plan is expected to use
    (the least full GPUs are planned afresh, control.repack, while the re-plan uses more;
    0 where unknown)."""
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
    origin: dict[str, frozenset[str]] = {}
    pairs: Pairs = {}
    for g in previous.gpus:
        origin[g.gpu] = frozenset(a.session for a in g.allocations)
        pairs.update(((g.gpu, a.session), a.model) for a in g.allocations)
        c = _class_for(g.gpu, g.gpu_type, prob.classes)
        if c is None:
            continue
        node = Node(c, g.duty_cycle_ms, gpu=g.gpu)
        for a in g.allocations:
            d = want.get(a.session)
            if d is None or d.model != a.model:
                continue
            if c is d.gclass:
                here = d
            else:
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
    index = SlackIndex(nodes)
    absorb(nodes, left, index)
    rest = []
    for sid, rate in left.items():
        d = want[sid]
        if rate > EPS:
            # Whole into a GPU with room (one load), else onto new GPUs with the rest:
            # splitting across GPUs' last bits of room costs a load per part.
            rate = place_rate(d, rate, nodes, {}, index, shrink=False, split=False, scan=SCAN)
        if rate > EPS:
            rest.append(Demand(d.id, d.model, d.slo, rate, d.table, d.gclass, share=d.share))
    fresh = policy(rest)
    for n in fresh:
        index.add(n)
    nodes += fresh
    required = sum(node_moves(n, origin) for n in nodes)
    kept = {n.gpu for n in nodes}
    required += sum(len(s) for gid, s in origin.items() if gid not in kept)
    budget = move_budget(previous, required, max_moves)
    # Every GPU may be dissolved here, saturated ones too (the policies keep theirs
    # out): so a re-plan of unchanged rates may move a session, but only to free a GPU.
    done = consolidate(nodes, origin, budget, index)
    changed = before.keys() != want.keys() or any(
        abs(r - want[sid].rate) > EPS * max(1.0, r) for sid, r in before.items()
    )
    # Towards a fresh plan, where rates changed (unchanged ones move nothing) and the
    # budget left can pay for a window's moves.
    if changed and budget - done.spent >= REPACK_MIN_BUDGET:
        more = repack(done.nodes, origin, budget - done.spent, target or 0, policy)
        done.nodes, done.spent = more.nodes, done.spent + more.spent
        done.held_back.gpus += more.held_gpus
        done.held_back.moves += more.held_moves
    return Replanned(done.nodes, required, done.spent, budget, done.held_back, pairs)
