"""The packers of the `tnx` policy: residual loads, and two ways to pack them onto nodes.

A residual load is what is left of a session's rate once whole GPUs are saturated
(Nexus §6.1, step 1). `pack` puts loads in order of their longest feasible duty
cycle, shortest first, each best-fit into the open node it fills most within an
occupancy-inflation bound; `pack_memory` puts them biggest-first by memory, for GPUs
whose memory runs out before their time. control.trials chooses which to run with
which settings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from control.nexus_paper import saturate
from control.nodes import Node
from control.problem import Demand
from control.slack_index import SlackIndex
from control.tables import EPS

# Splitting loads whose cycle the largest batch cuts short: at most this many parts.
# More parts lengthen each part's cycle further but cost a batch per cycle on every
# node that holds one; judged on the held-out table (BENCHMARKS.md, "total" row).
SPLIT_MAX = 4
# Shortening a full node's cycle to make memory room ("squeeze" trials): the factor per
# step and the steps bisected over, i.e. cycles down to 0.85^6 ≈ 0.38 of the node's.
# Finer steps fit memory closer but re-batch the node more often; judged on the
# held-out table's 2.5 GB and 4 GB rows (BENCHMARKS.md).
SQUEEZE_FACTOR, SQUEEZE_STEPS = 0.85, 6


@dataclass(slots=True)
class Residual:
    demand: Demand
    rate: float
    duty: float  # the cycle of least occupancy alone
    occupancy: float  # l(b)/d alone at that cycle
    longest: float  # the longest feasible cycle
    batch: int  # its batch alone at `duty`


def prefetch(kind: str, loads: Iterable[tuple[Demand, float]], mem_weight: float = 0.0) -> None:
    """BatchTable.prefetch for (demand, rate) pairs, grouped by table and GPU memory."""
    groups: dict[tuple[int, float], tuple[Demand, list[float], list[float]]] = {}
    for d, rate in loads:
        _, rates, slos = groups.setdefault((id(d.table), d.gclass.memory), (d, [], []))
        rates.append(rate)
        slos.append(d.slo)
    for d, rates, slos in groups.values():
        d.table.prefetch(kind, rates, slos, d.gclass.memory, mem_weight)


def residuals(demands: list[Demand], mem_weight: float = 0.0) -> tuple[list[Node], list[Residual]]:
    full: list[Node] = []
    rest: list[Residual] = []
    prefetch("peak", ((d, d.rate) for d in demands))
    lefts = []
    for d in demands:
        peak = d.table.peak_batch(d.slo, d.gclass.memory)
        lefts.append(None if peak is None else saturate(d, peak))
    moved = [(d, got[1]) for d, got in zip(demands, lefts, strict=True) if got and got[1] > EPS]
    prefetch("alone", moved, mem_weight)
    prefetch("duty", moved)
    for d, got in zip(demands, lefts, strict=True):
        t, cap = d.table, d.gclass.memory
        if got is None:
            continue
        peak = t.peak_batch(d.slo, cap)
        nodes, left = got
        full += nodes
        if left <= EPS:
            continue
        alone = t.alone(left, d.slo, cap, mem_weight)
        if alone is None:
            # Only with a non-monotone profile: a smaller batch is slower than the peak
            # one. The saturated shape (batch `peak`, d = l(peak)) still holds the rate.
            alone = (peak, t.lat[peak])
        b, duty = alone
        rest.append(Residual(d, left, duty, t.lat[b] / duty, t.max_duty(left, d.slo, cap), b))
    return full, rest


def reweighted(rest: list[Residual], mem_weight: float) -> list[Residual]:
    """The same residual loads with their alone configuration chosen to save memory."""
    out = []
    prefetch("alone", ((r.demand, r.rate) for r in rest), mem_weight)
    for r in rest:
        d, t = r.demand, r.demand.table
        alone = t.alone(r.rate, d.slo, d.gclass.memory, mem_weight)
        if alone is None:
            out.append(r)
            continue
        b, duty = alone
        out.append(Residual(d, r.rate, duty, t.lat[b] / duty, r.longest, b))
    return out


def split_capped(rest: list[Residual], reach: float) -> list[Residual]:
    """Loads whose cycle is cut short by the largest profiled batch, not by their SLO,
    split into up to SPLIT_MAX equal parts whose cycles reach `reach` of the SLO.

    A short cycle costs every other session on the node a batch per cycle: halving
    such a load's rate on each of two nodes doubles both nodes' cycles.
    """
    out: list[Residual] = []
    for k in range(1, SPLIT_MAX):
        prefetch("duty", ((r.demand, r.rate / k) for r in rest))
    parts = []
    for r in rest:
        d, t = r.demand, r.demand.table
        want = reach * (d.slo - t.lat[t.max_batch])
        k = 1
        while k < SPLIT_MAX and t.max_duty(r.rate / k, d.slo, d.gclass.memory) < want:
            k += 1
        parts.append(k)
    split = [(r.demand, r.rate / k) for r, k in zip(rest, parts, strict=True) if k > 1]
    prefetch("alone", split)
    prefetch("duty", split)
    for r in rest:
        d, t = r.demand, r.demand.table
        cap = d.gclass.memory
        want = reach * (d.slo - t.lat[t.max_batch])
        k = 1
        while k < SPLIT_MAX and t.max_duty(r.rate / k, d.slo, cap) < want:
            k += 1
        part = r.rate / k
        alone = t.alone(part, d.slo, cap) if k > 1 else None
        if alone is None:
            out.append(r)
            continue
        b, duty = alone
        res = Residual(d, part, duty, t.lat[b] / duty, t.max_duty(part, d.slo, cap), b)
        out += [res] * k  # the packers never mutate a Residual
    return out


def _open(r: Residual) -> Node:
    node = Node(r.demand.gclass, r.duty)
    if node.add(r.demand, r.rate):
        return node
    # The batch may exceed ceil(r·d/1000) (see residuals()); it still holds the arrivals.
    return Node.alone(r.demand, r.rate, r.batch, r.duty)


def _place(
    r: Residual,
    best: Node | None,
    duty: float,
    nodes: list[Node],
    open_: SlackIndex | list[Node],
) -> Node:
    """Put `r` on `best` at cycle `duty` (shrinking it if need be), or on a new node."""
    if best is None:
        best = _open(r)
        nodes.append(best)
        if isinstance(open_, list):
            open_.append(best)
        else:
            open_.add(best)
    elif duty == best.duty:
        best.add(r.demand, r.rate)
    else:
        best.add_shrunk(r.demand, r.rate, duty)
    return best


def pack(
    rest: list[Residual],
    bound: float,
    squeeze: bool = False,
    balance: bool = False,
    both: bool = False,
) -> list[Node]:
    nodes: list[Node] = []
    # Open nodes (room for at least the cheapest batch of any load; the rest are closed),
    # by slack: a load looks only at those with room for its batch of 1. Ties go to the
    # node opened first, as a scan in opening order would choose.
    index = SlackIndex(hosts=False)
    least = min((r.demand.table.cumlat[1] for r in rest), default=0.0)
    for r in sorted(rest, key=lambda r: (r.longest, -r.occupancy)):
        d, t, rate = r.demand, r.demand.table, r.rate
        best: Node | None = None
        best_occ, best_seq = -1.0, 0
        limit = r.occupancy * (1.0 + bound)
        best_duty = 0.0
        per_byte = 1.0 / d.gclass.memory if both and math.isfinite(d.gclass.memory) else 0.0
        keys, start, by_seq = index.room(d.gclass, t.lat[1])
        for k in range(start, len(keys)):  # the hottest loop of planning: kept flat
            seq = keys[k][1]
            node = by_seq[seq]
            c = node.cost(d, rate)
            duty = node.duty
            if c is None and squeeze and node.mem + t.mem[1] > node.gclass.memory:
                # Out of memory, not time: a shorter cycle means smaller batches.
                sq = _squeeze(node, d, rate)
                if sq is not None:
                    duty, load, mem = sq
                    c = (0, load - node.load, mem - node.mem)
            if c is None or c[1] / duty > limit:
                continue
            occ = (node.load + c[1]) / duty + per_byte * (node.mem + c[2])
            if occ > best_occ or (occ == best_occ and seq < best_seq):
                best, best_occ, best_seq, best_duty = node, occ, seq, duty
        best = _place(r, best, best_duty, nodes, index)
        if balance:
            best.balance()
        if best.slack < least:
            index.discard(best)
        else:
            index.update(best)
    return nodes


def _squeeze(node: Node, d: Demand, rate: float) -> tuple[float, float, float] | None:
    """The longest of a few shorter cycles at which `rate` of `d` fits: (duty, Σ l, Σ mem)."""
    lo, hi, found = 1, SQUEEZE_STEPS, None
    while lo <= hi:  # fewer steps fit memory worse but time better: bisect
        k = (lo + hi) // 2
        sh = node.shrunk(d, rate, node.duty * SQUEEZE_FACTOR**k)
        if sh is not None:
            found, hi = (node.duty * SQUEEZE_FACTOR**k, sh[0], sh[1]), k - 1
        else:
            lo = k + 1
    return found


def pack_memory(rest: list[Residual], by_time: bool = False) -> list[Node]:
    """First-fit decreasing by memory, for GPUs whose memory runs out before their time:
    biggest models first, each into the node it leaves fullest in memory, shortening that
    node's cycle (as the paper's merge does) where the newcomer's SLO needs it."""
    nodes: list[Node] = []
    open_: list[Node] = []
    least_lat = min((r.demand.table.cumlat[1] for r in rest), default=0.0)
    least_mem = min((min(r.demand.table.mem) for r in rest), default=0.0)

    def size(r: Residual) -> float:
        if by_time:
            cap = r.demand.gclass.memory
            m = r.demand.table.mem[r.batch] / cap if math.isfinite(cap) else 0.0
            return -max(r.occupancy, m)
        return -r.demand.table.mem[r.batch]

    for r in sorted(rest, key=size):
        d = r.demand
        best: Node | None = None
        best_duty, best_fill = 0.0, -1.0
        for node in open_:
            if node.gclass is not d.gclass:
                continue
            duty = node.duty if node.duty <= r.longest else r.longest
            if duty == node.duty:
                c = node.cost(d, r.rate)
                fill = None if c is None else node.mem + c[2]
            else:
                sh = node.shrunk(d, r.rate, duty)
                fill = None if sh is None else sh[1]
            if fill is not None and by_time:
                cap = node.gclass.memory
                load = node.load + c[1] if duty == node.duty else sh[0]
                fill = load / duty + (fill / cap if math.isfinite(cap) else 0.0)
            if fill is not None and fill > best_fill:
                best, best_duty, best_fill = node, duty, fill
        best = _place(r, best, best_duty, nodes, open_)
        if best.slack < least_lat or best.gclass.memory - best.mem < least_mem:
            open_.remove(best)  # by identity: Node has eq=False
    return nodes


def memory_pressure(rest: list[Residual]) -> float:
    """GPUs' worth of memory over GPUs' worth of time that the residual loads take alone."""
    mem = time = 0.0
    for r in rest:
        t = r.demand.table
        if math.isfinite(r.demand.gclass.memory):
            mem += t.mem[r.batch] / r.demand.gclass.memory
        time += r.occupancy
    return mem / time if time > 0 else 0.0
