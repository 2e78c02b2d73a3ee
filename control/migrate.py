"""Freeing GPUs within a move budget: the re-planner's consolidation (issue 15).

After a re-plan has served the new rates, its emptiest GPUs may be dissolved into
the others' slack, as planning does (control.consolidate), but each dissolution
costs moves: the (GPU, session) pairs it loads and unloads relative to the previous
plan. A dissolution is taken whole (its loads with the unloads they make possible,
never an unload alone) and only while the moves spent stay within the budget; the
ones found beyond it are undone and reported as held back, so the next epoch can
take them. Nodes are found through a SlackIndex, not by scanning every node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from control.consolidate import MAX_DISSOLVE_FAILURES, SMALL_PLAN, SMALL_PLAN_FAILURES, place_rate
from control.nodes import Node
from control.slack_index import SlackIndex
from control.tables import EPS


@dataclass(slots=True)
class HeldBack:
    """GPUs the consolidation found it could free but the budget did not allow, and the
    moves those would take (at least: the search stops after a few failures)."""

    gpus: int = 0
    moves: int = 0

    def summary(self) -> str:
        return f"{self.gpus} GPUs for {self.moves} moves" if self.gpus else "-"


@dataclass(slots=True)
class Consolidated:
    nodes: list[Node]
    spent: int  # moves spent from the budget
    held_back: HeldBack


def node_moves(n: Node, origin: Mapping[str, frozenset[str]]) -> int:
    """(GPU, session) pairs loaded or unloaded on `n` relative to the previous plan."""
    was = origin.get(n.gpu, frozenset()) if n.gpu is not None else frozenset()
    now = n.pieces.keys()
    return len(now - was) + len(was - now)


def _fullness(n: Node) -> float:
    cap = n.gclass.memory
    return n.occupancy + (n.mem / cap if math.isfinite(cap) else 0.0)


def consolidate(
    nodes: list[Node], origin: Mapping[str, frozenset[str]], budget: int
) -> Consolidated:
    """Dissolve the least full nodes while each frees a GPU within the move budget."""
    index = SlackIndex(nodes)
    nodes = list(nodes)
    tried: set[int] = set()
    failures, spent = 0, 0
    held = HeldBack()
    limit = SMALL_PLAN_FAILURES if len(nodes) <= SMALL_PLAN else MAX_DISSOLVE_FAILURES
    slack = sum(n.slack / n.duty for n in nodes)
    while failures < limit:
        cands = [n for n in nodes if id(n) not in tried]
        if not cands:
            break
        victim = min(cands, key=_fullness)
        tried.add(id(victim))
        if slack - victim.slack / victim.duty < victim.occupancy:
            failures += 1
            continue
        index.discard(victim)
        others = [n for n in nodes if n is not victim]
        touched: dict[int, tuple[Node, Node]] = {}
        ok = True
        for p in sorted(victim.pieces.values(), key=lambda p: -p.lat):
            left = place_rate(p.demand, p.rate, others, touched, index)
            for alt in p.demand.alts:
                if left > EPS:
                    left = place_rate(alt, left, others, touched, index)
            if left > EPS:
                ok = False
                break
        cost = 0
        if ok:
            was = origin.get(victim.gpu, frozenset()) if victim.gpu is not None else frozenset()
            cost = len(was) - node_moves(victim, origin)
            cost += sum(node_moves(n, origin) - node_moves(b, origin) for n, b in touched.values())
            if spent + cost > budget:
                held.gpus += 1
                held.moves += cost
                ok = False
        if ok:
            nodes = others
            spent += cost
            tried.clear()
            slack = sum(n.slack / n.duty for n in nodes)
            continue
        for n, before in touched.values():
            n.restore(before)
            index.update(n)
        index.add(victim)
        failures += 1
    return Consolidated(nodes, spent, held)
