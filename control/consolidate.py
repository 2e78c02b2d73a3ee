"""Filling slack and dissolving GPUs: the local search after packing.

Bin packing leaves partly empty nodes. Taking the emptiest node, its sessions are
moved into other nodes' slack: whole where one node takes it, else by shortening a
node's cycle as the paper's merge does, else split across several nodes (a
session's rate may be served by several GPUs); then, on another GPU type that can
serve it. If all of it fits, the node is gone; if not, every change is undone.
Incremental re-planning uses the same moves to absorb grown rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from control.nodes import FIT, Node
from control.problem import Demand
from control.slack_index import SlackIndex
from control.tables import EPS

# Consecutive failed attempts after which dissolving stops: trades GPUs for planning
# time (each attempt scans every node per session moved, and later candidates are
# fuller, so less likely to go); judged on BENCHMARKS.md "Scheduler", 2000-session rows.
MAX_DISSOLVE_FAILURES = 12
# Nodes tried for a shortened cycle per placement, best bound first: the bound (Σ of
# cheapest batches) is loose, and on a plan of 1,600 nodes trying all that pass it took
# ~175 re-batchings per placement and half of the dissolving time (BENCHMARKS.md,
# "Fleet scale"); beyond the first few the choice seldom changes.
SHRINK_CANDIDATES = 32
# With a SlackIndex, a placement compares at most this many nodes that can take it, the
# least roomy first: after a rate change hundreds of nodes have some room, and the best
# fit is among the tightest; judged on "Fleet scale" re-plan time and GPUs (BENCHMARKS.md).
FIT_CANDIDATES = 16
# On plans of at most SMALL_PLAN nodes an attempt is cheap: allow more failures; judged
# on the held-out table's 20- and 150-session rows (BENCHMARKS.md) against plan time.
SMALL_PLAN, SMALL_PLAN_FAILURES = 200, 40


def _touch(touched: dict[int, tuple[Node, Node]], n: Node) -> None:
    if id(n) not in touched:
        touched[id(n)] = (n, n.copy())


def _add_shrinking(
    d: Demand,
    rate: float,
    nodes: list[Node],
    touched: dict[int, tuple[Node, Node]],
    index: SlackIndex | None = None,
) -> Node | None:
    """Put all of `rate` on the node whose cycle, shortened to suit `d`, grows least in
    occupancy (the paper's merge, used only where nothing else fits whole)."""
    longest = d.table.max_duty(rate, d.slo, d.gclass.memory)
    # Branch and bound: no batch costs less than its table's floor, so Σ floors bounds a
    # shortened node's load from below; nodes are tried by that bound, and the scan stops
    # where the bound passes the best growth found, or after SHRINK_CANDIDATES nodes.
    bounded = []
    for i, n in enumerate(nodes):
        if n.duty <= longest or n.slack <= 0:
            continue
        if index is not None:
            lb = index.floor_sum(n)
        else:
            lb = sum(p.demand.table.floor for p in n.pieces.values())
        if d.id not in n.pieces:
            lb += d.table.floor
        if lb <= longest * FIT:
            bounded.append((lb / longest - n.occupancy, i, n))
    bounded.sort(key=lambda x: (x[0], x[1]))
    best: Node | None = None
    best_key = (math.inf, 0)
    for lb_growth, i, n in bounded[:SHRINK_CANDIDATES]:
        if lb_growth > best_key[0] + 1e-12:
            break
        sh = n.shrunk(d, rate, longest)
        if sh is not None and (sh[0] / longest - n.occupancy, i) < best_key:
            best, best_key = n, (sh[0] / longest - n.occupancy, i)
    if best is None:
        return None
    _touch(touched, best)
    return best if best.add_shrunk(d, rate, longest) else None


def place_rate(
    d: Demand,
    rate: float,
    nodes: list[Node],
    touched: dict[int, tuple[Node, Node]],
    index: SlackIndex | None = None,
    shrink: bool = True,
    split: bool = True,
    scan: int | None = None,
) -> float:
    """Put `rate` of `d` into the nodes' slack, whole where it fits, else (with `shrink`)
    on a node whose cycle it shortens, else (with `split`) split; returns what is left. `touched`
    collects snapshots of the nodes it changes. With an `index` of `nodes`, only its
    candidates are looked at (and kept up to date); with `scan` too, only the nodes that
    hold the session and the `scan` roomiest."""

    def same() -> list[Node]:  # every node of the class (an index's only when needed)
        pool = nodes if index is None else index.nodes(d.gclass)
        return [n for n in pool if n.gclass is d.gclass and n.slack >= 0]

    every = same() if index is None else []

    def options() -> list[Node]:
        if index is None:
            return every
        if scan is not None:
            hosts = [n for n in index.hosts(d.id) if n.gclass is d.gclass]
            return hosts + [n for n in index.roomiest(d.gclass, scan) if d.id not in n.pieces]
        return index.candidates(d.gclass, d.id, d.table.floor)

    def changed(n: Node) -> None:
        if index is not None:
            index.update(n)

    while rate > EPS:
        best: Node | None = None
        best_occ = -1.0
        fits = 0
        for n in options():
            c = n.cost(d, rate)
            if c is None:
                continue
            if (n.load + c[1]) / n.duty > best_occ:
                best, best_occ = n, (n.load + c[1]) / n.duty
            fits += 1
            if index is not None and fits >= FIT_CANDIDATES:
                break  # the index lists the roomiest last: the best fits come first
        if best is not None:
            _touch(touched, best)
            best.add(d, rate)
            changed(best)
            return 0.0
        shrunk = None
        if shrink:
            shrunk = _add_shrinking(d, rate, every if index is None else same(), touched, index)
        if shrunk is not None:
            changed(shrunk)
            return 0.0
        if not split:
            return rate
        # No node takes it whole: fill the node that can take the most, and go on.
        cap, host = 0.0, None
        for n in options():
            m = n.max_rate(d)
            if m > cap:
                cap, host = m, n
        if host is None or cap <= EPS:
            return rate
        part = min(cap, rate)
        _touch(touched, host)
        if not host.add(d, part):
            return rate
        changed(host)
        rate -= part
    return 0.0


def _fullness(n: Node) -> float:
    """How hard a node is to empty: its time share plus its memory share."""
    cap = n.gclass.memory
    return n.occupancy + (n.mem / cap if math.isfinite(cap) else 0.0)


def dissolve(nodes: list[Node], budget: int | None = None) -> list[Node]:
    """Empty the least occupied nodes into the others' slack while that works."""
    if budget is None:
        budget = SMALL_PLAN_FAILURES if len(nodes) <= SMALL_PLAN else MAX_DISSOLVE_FAILURES
    return dissolve_priced(nodes, budget)[0]


Price = Callable[[Node, list[tuple[Node, Node]]], int]


def dissolve_priced(
    nodes: list[Node],
    failures: int,
    price: Price | None = None,
    allowance: float = math.inf,
    shrink: bool = True,
    index: SlackIndex | None = None,
    scan: int | None = None,
) -> tuple[list[Node], int, list[int]]:
    """`dissolve`, where emptying a node costs `price(victim, [(node, before), ...])` and
    the costs taken stay within `allowance`: (nodes, spent, costs of the ones held back).
    Without `shrink`, pieces go only into room there is (no cycle shortened); with `scan`,
    only onto the nodes holding the session and the `scan` roomiest.
    `index`: a SlackIndex of `nodes` already built (it is kept up to date).

    Nodes are found through a SlackIndex; a dissolution is undone whole when its pieces
    do not all fit, or when it would pass the allowance (then it is held back).
    """
    index = SlackIndex(nodes) if index is None else index
    nodes = list(nodes)
    tried: set[int] = set()
    spent, held = 0, []
    slack = sum(n.slack / n.duty for n in nodes)
    while failures > 0:
        cands = [n for n in nodes if id(n) not in tried]
        if not cands:
            break
        victim = min(cands, key=_fullness)
        tried.add(id(victim))
        if slack - victim.slack / victim.duty < victim.occupancy:
            failures -= 1
            continue
        index.discard(victim)
        touched: dict[int, tuple[Node, Node]] = {}
        ok = True
        for p in sorted(victim.pieces.values(), key=lambda p: -p.lat):
            left = place_rate(p.demand, p.rate, nodes, touched, index, shrink, True, scan)
            # Then on another GPU type that can serve the session, if one is in use.
            for alt in p.demand.alts:
                if left > EPS:
                    left = place_rate(alt, left, nodes, touched, index, shrink, True, scan)
            if left > EPS:
                ok = False
                break
        cost = price(victim, list(touched.values())) if ok and price is not None else 0
        if ok and spent + cost > allowance:
            held.append(cost)
            ok = False
        if ok:
            nodes = [n for n in nodes if n is not victim]
            spent += cost
            tried.clear()
            slack = sum(n.slack / n.duty for n in nodes)
            continue
        for n, before in touched.values():
            n.restore(before)
            index.update(n)
        index.add(victim)
        failures -= 1
    return nodes, spent, held
