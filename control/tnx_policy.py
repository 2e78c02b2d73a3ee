"""The default policy `tnx`: squishy bin packing (Nexus §6.1) with better packing.

What it changes from the paper's greedy merge, and why:
- Residual loads go in order of their longest feasible duty cycle, shortest first,
  so every open node already has a cycle short enough for what comes next: nodes
  never have to shrink their cycle, which in the paper re-batches everyone on them.
- Each residual load goes best-fit into the open node it fills most, but only where
  the node's shorter cycle does not inflate its occupancy beyond a bound; several
  bounds are tried and the plan with the fewest GPUs wins.
- Where memory rather than time runs out, loads are also packed biggest-first by
  memory, with batch sizes chosen to hold less memory (a weighted cost).
- Loads are also packed biggest-first by the larger of their time and memory shares,
  with best fit judged on both; and loads whose cycle the largest profiled batch cuts
  short are split into parts with longer cycles (each node's cycle is its tightest).
- Cycles are then stretched as far as the SLOs allow (bigger batches, lower cost),
  and the emptiest nodes are dissolved into the others' slack (control.consolidate).
- With several GPU types and memory that binds, sessions of different models share a
  GPU only on the same type: the plan with sessions moved to one type (all that it can
  serve, or those whose need grows at most 1.2x or 2x) is taken where it saves a GPU.
- The paper's plan, after the same dissolving, is a candidate too, so this policy
  never uses more GPUs than `nexus-paper`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from control.consolidate import dissolve
from control.nexus_paper import plan_nexus, saturate
from control.nodes import Node, Piece
from control.problem import Demand, GpuClass

# Occupancy inflation tolerated when a load joins a node with a shorter cycle than its
# own: 0 keeps SLO classes apart, inf packs wherever it fits.
INFLATION_BOUNDS = (0.15, 0.6, math.inf)
MEMORY_WEIGHTS = (0.5, 1.0)
# Shortening a full node's cycle to make memory room: factor per step, steps, and how
# many nodes one load may try it on (each try re-batches the node).
SQUEEZE, SQUEEZE_STEPS = 0.85, 6
# Squeezing costs a re-batch of every full node per load: only on problems this small.
SQUEEZE_MAX_LOADS = 800
# Splitting loads whose cycle the largest batch cuts short: at most this many parts,
# until each part's longest cycle reaches this share of its SLO (less a batch).
SPLIT_MAX, SPLIT_REACH = 4, (0.5,)
# With several GPU types, problems of at most this many demands try every trial with
# all sessions on one type; bigger ones only the trial that won with sessions spread.
RETARGET_ALL_TRIALS = 120
RETARGET_RATIOS, RETARGET_RATIOS_UPTO = (math.inf, 1.2, 2.0), 1000
# Plans of at most this many nodes (besides the saturated ones) get a last, fuller
# round of dissolving, stopping after this many failed tries.
POLISH_MAX_NODES, POLISH_FAILURES = 200, 400
MEMORY_FIRST = -1.0  # a trial "bound" that selects pack_memory
# Above this ratio of memory to time (both in GPUs), memory-saving trials run too.
MEMORY_PRESSURE = 0.9


@dataclass(slots=True)
class Residual:
    demand: Demand
    rate: float
    duty: float  # the cycle of least occupancy alone
    occupancy: float  # l(b)/d alone at that cycle
    longest: float  # the longest feasible cycle
    batch: int  # its batch alone at `duty`


def residuals(demands: list[Demand], mem_weight: float = 0.0) -> tuple[list[Node], list[Residual]]:
    full: list[Node] = []
    rest: list[Residual] = []
    for d in demands:
        t, cap = d.table, d.gclass.memory
        peak = t.peak_batch(d.slo, cap)
        if peak is None:
            continue
        nodes, left = saturate(d, peak)
        full += nodes
        if left <= 1e-9:
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
    if not node.add(r.demand, r.rate):
        # The batch may exceed ceil(r·d/1000) (see residuals()); it still holds the arrivals.
        t = r.demand.table
        node.pieces[r.demand.id] = Piece(r.demand, r.rate, r.batch)
        node.load, node.mem = t.lat[r.batch], t.mem[r.batch]
    return node


def _place(
    r: Residual, best: Node | None, duty: float, nodes: list[Node], open_: list[Node]
) -> Node:
    """Put `r` on `best` at cycle `duty` (shrinking it if need be), or on a new node."""
    if best is None:
        best = _open(r)
        nodes.append(best)
        open_.append(best)
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
    # Nodes with room for at least the cheapest batch of any load; the rest are closed.
    open_: list[Node] = []
    least = min((r.demand.table.cumlat[1] for r in rest), default=0.0)
    for r in sorted(rest, key=lambda r: (r.longest, -r.occupancy)):
        d, t = r.demand, r.demand.table
        best: Node | None = None
        best_occ = -1.0
        limit = r.occupancy * (1.0 + bound)
        best_duty = 0.0
        per_byte = 1.0 / d.gclass.memory if both and math.isfinite(d.gclass.memory) else 0.0
        for node in open_:
            if node.gclass is not d.gclass or node.duty - node.load < t.lat[1]:
                continue
            c = node.cost(d, r.rate)
            duty = node.duty
            if c is None and squeeze and node.mem + t.mem[1] > node.gclass.memory:
                # Out of memory, not time: a shorter cycle means smaller batches.
                sq = _squeeze(node, d, r.rate)
                if sq is not None:
                    duty, load, mem = sq
                    c = (0, load - node.load, mem - node.mem)
            if c is None or c[1] / duty > limit:
                continue
            occ = (node.load + c[1]) / duty + per_byte * (node.mem + c[2])
            if occ > best_occ:
                best, best_occ, best_duty = node, occ, duty
        best = _place(r, best, best_duty, nodes, open_)
        if balance:
            best.balance()
        if best.slack < least:
            _drop(open_, best)
    return nodes


def _squeeze(node: Node, d: Demand, rate: float) -> tuple[float, float, float] | None:
    """The longest of a few shorter cycles at which `rate` of `d` fits: (duty, Σ l, Σ mem)."""
    lo, hi, found = 1, SQUEEZE_STEPS, None
    while lo <= hi:  # fewer steps fit memory worse but time better: bisect
        k = (lo + hi) // 2
        sh = node.shrunk(d, rate, node.duty * SQUEEZE**k)
        if sh is not None:
            found, hi = (node.duty * SQUEEZE**k, sh[0], sh[1]), k - 1
        else:
            lo = k + 1
    return found


def _drop(nodes: list[Node], node: Node) -> None:
    """list.remove by identity (Node's dataclass __eq__ compares fields: slow)."""
    for i in range(len(nodes) - 1, -1, -1):
        if nodes[i] is node:
            del nodes[i]
            return


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
            _drop(open_, best)
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


def trials(rest: list[Residual]) -> list[tuple[list[Residual], float, float, str]]:
    """(loads, inflation bound or MEMORY_FIRST, memory weight, mode) to try.

    Mode "balance" shortens a node's cycle after each addition while its memory fills
    faster than its time; "squeeze" does so only to fit a load in (better, slower).
    """
    finite = any(math.isfinite(r.demand.gclass.memory) for r in rest)
    mode = "balance" if finite else ""
    pressure = memory_pressure(rest) > MEMORY_PRESSURE
    small = len(rest) <= SQUEEZE_MAX_LOADS
    # The tightest bound seldom wins where memory binds on big problems.
    bounds = INFLATION_BOUNDS if small or not pressure else INFLATION_BOUNDS[1:]
    out = [(rest, bound, 0.0, mode) for bound in bounds]
    # Biggest first by the larger of time and memory share, best fit by both.
    out.append((rest, MEMORY_FIRST, 0.0, "by-time"))
    for reach in SPLIT_REACH:
        split = split_capped(rest, reach)
        if len(split) > len(rest):
            out += [(split, bound, 0.0, mode) for bound in INFLATION_BOUNDS[1:]]
    if pressure:
        # Memory, not time, may bound the packing: also pack biggest-first by memory, and
        # try configurations with smaller batches (shorter cycles) that hold less memory.
        if small:
            out.append((rest, MEMORY_FIRST, 0.0, ""))
        for w in MEMORY_WEIGHTS:
            if not small and w != MEMORY_WEIGHTS[-1]:
                continue
            rest_w = reweighted(rest, w)
            out.append((rest_w, MEMORY_FIRST, w, mode))
            if not small:
                continue  # the rest seldom win on big problems, and would cost seconds
            for b in INFLATION_BOUNDS[1:]:
                out.append((rest_w, b, w, mode))
                # Best fit judged by time and memory together ("+both").
                out.append((rest_w, b, w, mode + "+both"))
                out.append((rest_w, b, w, "squeeze"))
                out.append((rest_w, b, w, "squeeze+both"))
    return out


def retarget(demands: list[Demand], gclass: GpuClass, ratio: float = math.inf) -> list[Demand]:
    """The demands moved to `gclass` wherever it can serve them at most `ratio` times
    their need where they are (the original class becomes an alternative)."""
    out = []
    for d in demands:
        alt = next((a for a in d.alts if a.gclass is gclass), None)
        if d.gclass is gclass or alt is None:
            out.append(d)
            continue
        if math.isfinite(ratio) and alt.table.need(d.rate, d.slo) > ratio * d.table.need(
            d.rate, d.slo
        ):
            out.append(d)
            continue
        others = tuple(a for a in d.alts if a is not alt)
        out.append(replace(alt, alts=(replace(d, alts=()), *others)))
    return out


def plan_tnx(demands: list[Demand]) -> list[Node]:
    ours, won = _plan(demands)
    classes = {id(d.gclass): d.gclass for d in demands}
    if len(classes) > 1 and any(math.isfinite(c.memory) for c in classes.values()):
        # With several GPU types and memory that binds, sessions of different models
        # may share a GPU only on the same type: also try everything on one type.
        # Sessions move where their need grows at most by a ratio; on big problems
        # only all of them, and only with the trial that won above, to bound the time.
        small = len(demands) <= RETARGET_ALL_TRIALS
        for c, ratio in itertools.product(
            classes.values(), RETARGET_RATIOS if small else [math.inf]
        ):
            moved = retarget(demands, c, ratio)
            if any(m is not d for m, d in zip(moved, demands, strict=True)):
                alt, _ = _plan(moved, None if small else won)
                # Only for a GPU saved, and only where re-planning from this plan can
                # rebuild every allocation (the least batch that holds its arrivals).
                if len(alt) < len(ours) and _rebuildable(alt):
                    ours = alt
    # The paper's plan, after the same dissolving, is a candidate too: so this policy
    # never uses more GPUs than `nexus-paper`.
    paper = dissolve(plan_nexus(demands))
    return ours if _score(ours) <= _score(paper) else paper


def _plan(demands: list[Demand], only: tuple | None = None) -> tuple[list[Node], tuple | None]:
    """Saturated nodes plus the best packing of the residual loads over `trials`, and
    the winning trial's key (restrict to it with `only`)."""
    full, rest = residuals(demands)
    best: list[Node] | None = None
    won = None
    for loads, bound, weight, mode in trials(rest):
        key = (bound, weight, mode, len(loads) != len(rest))
        if only is not None and key != only:
            continue
        if bound == MEMORY_FIRST:
            nodes = pack_memory(loads, by_time=mode == "by-time")
        else:
            nodes = pack(
                loads,
                bound,
                squeeze=mode.startswith("squeeze"),
                balance=mode.startswith("balance"),
                both=mode.endswith("+both"),
            )
        for n in nodes:
            n.stretch(weight)
        nodes = dissolve(nodes)
        if best is None or _score(nodes) < _score(best):
            best, won = nodes, key
    if best is None:  # `only` named a trial these loads do not get: take them all
        return _plan(demands)
    if len(best) <= POLISH_MAX_NODES:
        # The winner, once more: try to empty each of its nodes, not only the
        # emptiest few (each try costs a scan of the nodes per piece moved).
        best = dissolve(best, budget=POLISH_FAILURES)
    return full + best, won


def _rebuildable(nodes: list[Node]) -> bool:
    return all(
        p.batch == p.demand.table.batch_for(p.rate, n.duty)
        for n in nodes
        for p in n.pieces.values()
    )


def _score(nodes: list[Node]) -> tuple[int, float]:
    return len(nodes), sum(n.occupancy for n in nodes)
