"""Squishy bin packing as the paper describes it (Nexus, SOSP 2019, §6.1): policy `nexus-paper`.

1. Saturated: each session gets floor(r / T) GPUs running its largest batch B with
   2·l(B) ≤ SLO back to back (d = l(B), T = 1000·B / l(B)).
2. Residual: the rest of the rate gets a node of its own, with the largest batch b
   whose duty cycle 1000·b / r plus l(b) meets the SLO.
3. Merge: residual nodes, by occupancy descending, each merge into the existing node
   that yields the highest occupancy (duty cycle = the smaller one, batches
   recomputed, valid only while the invariants hold), else stay alone.

Kept as the released algorithm, plus a memory check on merges (the paper has none),
so that its plans are valid on GPUs with little memory too.
"""

from __future__ import annotations

import itertools
import math

from control.nodes import FIT, Node, least_batches
from control.problem import Demand
from control.tables import EPS


def saturate(d: Demand, batch: int) -> tuple[list[Node], float]:
    """Whole GPUs at `batch` back to back, and the rate left over."""
    t = d.table
    duty = t.lat[batch]
    tput = 1000.0 * batch / duty
    n = math.floor(d.rate / tput + EPS)
    return [Node.alone(d, tput, batch) for _ in range(n)], max(0.0, d.rate - n * tput)


def residual_node(d: Demand, rate: float, sat_batch: int) -> Node:
    """A node of its own for `rate` (< one saturated GPU), per the paper's rule."""
    t, cap = d.table, d.gclass.memory
    choice: tuple[int, float] | None = None
    for b in range(t.max_batch, 0, -1):
        duty = 1000.0 * b / rate
        if t.mem[b] <= cap and duty + t.lat[b] <= d.slo and t.lat[b] <= duty:
            choice = (b, duty)
            break
    if choice is None:
        # Too little rate to fill even a batch of 1 within the SLO: the cycle is then
        # bounded by the SLO, not by arrivals.
        b = 1
        duty = d.slo - t.lat[1]
        if duty >= t.lat[1] and t.batch_for(rate, duty) == 1:
            choice = (b, duty)
    if choice is None:
        # Never reached with monotone profiles; the saturated shape always holds.
        choice = (sat_batch, t.lat[sat_batch])
    # The batch may exceed ceil(r·d/1000) in the fallback; it still holds the arrivals.
    b, duty = choice
    return Node.alone(d, rate, b, duty)


def try_merge(a: Node, b: Node) -> Node | None:
    """The node holding both, at the smaller duty cycle, or None if invalid."""
    return Node.of(a.gclass, min(a.duty, b.duty), {**a.pieces, **b.pieces}.values())


def _merge_load(node: Node, res: Node) -> float | None:
    """Occupancy after merging `res` into `node`, without building the node."""
    duty = min(node.duty, res.duty)
    if node.duty == duty:
        # Batches only change on the side whose cycle shrinks.
        got = least_batches(res.pieces.values(), duty, node.gclass.memory, node.load, node.mem)
    else:
        pieces = itertools.chain(node.pieces.values(), res.pieces.values())
        got = least_batches(pieces, duty, node.gclass.memory)
    return None if got is None else got[1] / duty


def plan_nexus(demands: list[Demand]) -> list[Node]:
    nodes: list[Node] = []
    residuals: list[Node] = []
    for d in demands:
        sat = d.table.saturated_batch(d.slo, d.gclass.memory)
        if sat is None:
            continue  # resolve() already listed it as unplaced
        full, rest = saturate(d, sat)
        nodes += full
        if rest > EPS:
            residuals.append(residual_node(d, rest, sat))
    residuals.sort(key=lambda n: n.occupancy, reverse=True)
    merged: list[Node] = []
    # Σ over each merged node's pieces of their cheapest batch: no merge loads a node less,
    # so a merge whose floors already pass the cycle is skipped without re-batching (the
    # same merges as trying each: the merge loop is quadratic, this keeps it cheap).
    floors: list[float] = []
    for res in residuals:
        best_i, best_occ = -1, -1.0
        rf = sum(p.demand.table.floor for p in res.pieces.values())
        for i, node in enumerate(merged):
            if node.gclass is not res.gclass and node.gclass != res.gclass:
                continue
            if node.duty <= res.duty:
                if node.load + rf > node.duty * FIT * (1 + 1e-12):
                    continue
            elif floors[i] + rf > res.duty * FIT * (1 + 1e-12):
                continue
            occ = _merge_load(node, res)
            if occ is not None and occ > best_occ:
                best_i, best_occ = i, occ
        m = try_merge(merged[best_i], res) if best_i >= 0 else None
        if m is None:
            merged.append(res)
            floors.append(rf)
        else:
            merged[best_i] = m
            floors[best_i] += rf
    return nodes + merged
