"""Filling slack and dissolving GPUs: the local search after packing.

Bin packing leaves partly empty nodes. Taking the emptiest node, its sessions are
moved into other nodes' slack: whole where one node takes it, else by shortening a
node's cycle as the paper's merge does, else split across several nodes (a
session's rate may be served by several GPUs); then, on another GPU type that can
serve it. (Two more moves, moving a piece out of the way and shortening a node's
cycle for memory, are written but off: see EJECT_MAX_NODES.) If all of it fits,
the node is gone; if not, every change is undone.
Incremental re-planning uses the same moves to absorb grown rates.
"""

from __future__ import annotations

import math

from control.nodes import Node, Piece
from control.problem import Demand

# Consecutive failed attempts after which dissolving stops: each attempt costs a scan
# of every node per session moved, and later candidates are fuller, so less likely.
MAX_DISSOLVE_FAILURES = 12
# Two-step moves (a piece out of the way, then the newcomer in) and squeezing a node for
# memory: off (0 nodes) since they broke "same rates, no moves" in re-planning (a
# hypothesis example, seed 8); how many pieces to try
# moving, and on plans of at most how many nodes (each try scans every node).
EJECT_TRIES, EJECT_MAX_NODES = 6, 0
# Shortening a node's cycle to make memory room: factor per step, and steps.
SQUEEZE, SQUEEZE_STEPS = 0.8, 5
# On small plans each attempt is cheap: try more of them.
SMALL_PLAN, SMALL_PLAN_FAILURES = 200, 40


def _snapshot(n: Node) -> tuple[dict[str, Piece], float, float, float]:
    return {k: Piece(p.demand, p.rate, p.batch) for k, p in n.pieces.items()}, n.load, n.mem, n.duty


def _restore(n: Node, snap: tuple[dict[str, Piece], float, float, float]) -> None:
    n.pieces, n.load, n.mem, n.duty = snap


def _touch(touched: dict[int, tuple], n: Node) -> None:
    if id(n) not in touched:
        touched[id(n)] = (n, _snapshot(n))


def _add_shrinking(d: Demand, rate: float, nodes: list[Node], touched: dict[int, tuple]) -> bool:
    """Put all of `rate` on the node whose cycle, shortened to suit `d`, grows least in
    occupancy (the paper's merge, used only where nothing else fits whole)."""
    longest = d.table.max_duty(rate, d.slo, d.gclass.memory)
    best: Node | None = None
    best_growth = math.inf
    for n in nodes:
        if n.duty <= longest or n.slack <= 0:
            continue
        sh = n.shrunk(d, rate, longest)
        if sh is not None and sh[0] / longest - n.occupancy < best_growth:
            best, best_growth = n, sh[0] / longest - n.occupancy
    if best is None:
        return False
    _touch(touched, best)
    return best.add_shrunk(d, rate, longest)


def _eject(d: Demand, rate: float, nodes: list[Node], touched: dict[int, tuple]) -> bool:
    """Put all of `rate` on a node after moving one of that node's pieces, whole, to
    another node: a two-step move for when GPUs are full (memory, mostly)."""
    tries = 0
    for n in nodes:
        if n.slack <= 0 and n.mem <= 0:
            continue
        for q in list(n.pieces.values()):
            if q.demand.id == d.id:
                continue
            # Would `d` fit once `q` is gone? Checked on the node itself, then undone.
            snap = _snapshot(n)
            n.remove(q.demand.id)
            fits = n.cost(d, rate) is not None
            _restore(n, snap)
            if not fits:
                continue
            tries += 1
            host = None
            for m in nodes:
                if m is not n and m.cost(q.demand, q.rate) is not None:
                    host = m
                    break
            if host is not None:
                _touch(touched, n)
                _touch(touched, host)
                n.remove(q.demand.id)
                host.add(q.demand, q.rate)
                n.add(d, rate)
                return True
            if tries >= EJECT_TRIES:
                return False
    return False


def _squeeze_in(d: Demand, rate: float, nodes: list[Node], touched: dict[int, tuple]) -> bool:
    """Put all of `rate` on a node out of memory rather than time, after shortening its
    cycle (smaller batches hold less memory): the node that stays least occupied."""
    mt = d.table.mem[1]
    best: Node | None = None
    best_duty, best_load = 0.0, math.inf
    for n in nodes:
        if n.mem + mt <= n.gclass.memory or n.slack < d.table.lat[1]:
            continue  # not memory that keeps `d` out
        duty = n.duty
        for _ in range(SQUEEZE_STEPS):
            duty *= SQUEEZE
            sh = n.shrunk(d, rate, duty)
            if sh is not None:
                if sh[0] / duty < best_load:
                    best, best_duty, best_load = n, duty, sh[0] / duty
                break
            if n.load > duty:
                break
    if best is None:
        return False
    _touch(touched, best)
    return best.add_shrunk(d, rate, best_duty)


def place_rate(d: Demand, rate: float, nodes: list[Node], touched: dict[int, tuple]) -> float:
    """Put `rate` of `d` into the nodes' slack, whole where it fits, else split; returns
    what is left over. `touched` collects snapshots of the nodes it changes."""
    same = [n for n in nodes if n.gclass is d.gclass and n.slack >= 0]
    while rate > 1e-9:
        best: Node | None = None
        best_occ = -1.0
        for n in same:
            c = n.cost(d, rate)
            if c is not None and (n.load + c[1]) / n.duty > best_occ:
                best, best_occ = n, (n.load + c[1]) / n.duty
        if best is not None:
            _touch(touched, best)
            best.add(d, rate)
            return 0.0
        if _add_shrinking(d, rate, same, touched):
            return 0.0
        if len(same) <= EJECT_MAX_NODES and _eject(d, rate, same, touched):
            return 0.0
        if len(same) <= EJECT_MAX_NODES and _squeeze_in(d, rate, same, touched):
            return 0.0
        # No node takes it whole: fill the node that can take the most, and go on.
        cap, host = 0.0, None
        for n in same:
            m = n.max_rate(d)
            if m > cap:
                cap, host = m, n
        if host is None or cap <= 1e-9:
            return rate
        part = min(cap, rate)
        _touch(touched, host)
        if not host.add(d, part):
            return rate
        rate -= part
    return 0.0


def _fullness(n: Node) -> float:
    """How hard a node is to empty: its time share plus its memory share."""
    cap = n.gclass.memory
    return n.occupancy + (n.mem / cap if math.isfinite(cap) else 0.0)


def dissolve(nodes: list[Node], budget: int | None = None) -> list[Node]:
    """Empty the least occupied nodes into the others' slack while that works."""
    failures = 0
    tried: set[int] = set()
    if budget is None:
        budget = SMALL_PLAN_FAILURES if len(nodes) <= SMALL_PLAN else MAX_DISSOLVE_FAILURES
    while failures < budget:
        cands = [n for n in nodes if id(n) not in tried]
        if not cands:
            break
        victim = min(cands, key=_fullness)
        tried.add(id(victim))
        others = [n for n in nodes if n is not victim]
        slack = sum(n.slack / n.duty for n in others)
        if slack < victim.occupancy:
            failures += 1
            continue
        touched: dict[int, tuple] = {}
        ok = True
        for p in sorted(victim.pieces.values(), key=lambda p: -p.lat):
            left = place_rate(p.demand, p.rate, others, touched)
            # Then on another GPU type that can serve the session, if one is in use.
            for alt in p.demand.alts:
                if left > 1e-9:
                    left = place_rate(alt, left, others, touched)
            if left > 1e-9:
                ok = False
                break
        if ok:
            nodes = others
            tried.clear()
        else:
            for n, snap in touched.values():
                _restore(n, snap)
            failures += 1
    return nodes
