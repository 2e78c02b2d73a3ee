"""A GPU node being packed: duty cycle d, and one batch per session per cycle.

The node keeps DESIGN.md's per-GPU invariants true at every step: Σ l(b) ≤ d,
d + l(b) ≤ SLO, r·d/1000 ≤ b ≤ max batch, Σ memory(b) ≤ the GPU's memory. Batches
are the least that hold a cycle's arrivals, b = ceil(r·d/1000); every method that
would break an invariant refuses instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from control.problem import Demand, GpuClass

# Sums of latencies are accumulated in different orders by different callers; a
# part-per-billion allowance keeps them agreeing (the validator allows 1e-6).
FIT = 1.0 + 1e-9


@dataclass(slots=True)
class Piece:
    """Part (or all) of one session's rate served on one node."""

    demand: Demand
    rate: float
    batch: int

    @property
    def lat(self) -> float:
        return self.demand.table.lat[self.batch]

    @property
    def mem(self) -> float:
        return self.demand.table.mem[self.batch]


@dataclass(slots=True)
class Node:
    gclass: GpuClass
    duty: float
    pieces: dict[str, Piece] = field(default_factory=dict)
    load: float = 0.0  # Σ l(b) in ms
    mem: float = 0.0
    gpu: str | None = None  # a fixed GPU id (fleet placement, incremental re-planning)

    @property
    def occupancy(self) -> float:
        return self.load / self.duty

    @property
    def slack(self) -> float:
        return self.duty - self.load

    def cost(self, d: Demand, rate: float) -> tuple[int, float, float] | None:
        """(new batch, Δload, Δmemory) of adding `rate` of `d` here, or None if it breaks a rule."""
        # The packers' innermost call: kept free of helper calls on purpose.
        old = self.pieces.get(d.id)
        t = d.table
        duty = self.duty
        if old is None:
            b = math.ceil(rate * duty / 1000.0 - 1e-9)
            ol = om = 0.0
        else:
            b = math.ceil((rate + old.rate) * duty / 1000.0 - 1e-9)
            ol, om = t.lat[old.batch], t.mem[old.batch]
        if b < 1:
            b = 1
        elif b > t.max_batch:
            return None
        lb = t.lat[b]
        dl = lb - ol
        if duty + lb > d.slo * FIT or self.load + dl > duty * FIT:
            return None
        dm = t.mem[b] - om
        if self.mem + dm > self.gclass.memory:
            return None
        return b, dl, dm

    def add(self, d: Demand, rate: float) -> bool:
        c = self.cost(d, rate)
        if c is None:
            return False
        b, dl, dm = c
        old = self.pieces.get(d.id)
        if old is None:
            self.pieces[d.id] = Piece(d, rate, b)
        else:
            old.rate += rate
            old.batch = b
        self.load += dl
        self.mem += dm
        return True

    def max_rate(self, d: Demand) -> float:
        """The most extra rate of `d` this node can take (0 when none): fills its slack."""
        old = self.pieces.get(d.id)
        base_rate = old.rate if old is not None else 0.0
        base_lat = old.lat if old is not None else 0.0
        base_mem = old.mem if old is not None else 0.0
        t = d.table
        room = self.duty - self.load + base_lat
        mroom = self.gclass.memory - self.mem + base_mem
        best = t.largest_fitting(min(room, d.slo - self.duty), mroom)
        return max(0.0, 1000.0 * best / self.duty - base_rate)

    def shrunk(self, d: Demand, rate: float, duty: float) -> tuple[float, float] | None:
        """(Σ l, Σ memory) with `rate` of `d` added and the cycle shortened to `duty`, as the
        paper's merge does; None if that breaks a rule."""
        load = mem = 0.0
        extra = rate
        for p in self.pieces.values():
            r = p.rate + extra if p.demand.id == d.id else p.rate
            extra = 0.0 if p.demand.id == d.id else extra
            t = p.demand.table
            b = t.batch_for(r, duty)
            if b > t.max_batch or duty + t.lat[b] > p.demand.slo * FIT:
                return None
            load += t.lat[b]
            mem += t.mem[b]
        if extra:
            t = d.table
            b = t.batch_for(extra, duty)
            if b > t.max_batch or duty + t.lat[b] > d.slo * FIT:
                return None
            load += t.lat[b]
            mem += t.mem[b]
        if load > duty * FIT or mem > self.gclass.memory:
            return None
        return load, mem

    def add_shrunk(self, d: Demand, rate: float, duty: float) -> bool:
        if self.shrunk(d, rate, duty) is None:
            return False
        old = self.pieces.get(d.id)
        if old is None:
            self.pieces[d.id] = Piece(d, rate, 1)
        else:
            old.rate += rate
        for p in self.pieces.values():
            p.batch = p.demand.table.batch_for(p.rate, duty)
        self.duty = duty
        self.load = sum(p.lat for p in self.pieces.values())
        self.mem = sum(p.mem for p in self.pieces.values())
        return True

    def remove(self, sid: str) -> Piece:
        p = self.pieces.pop(sid)
        self.load -= p.lat
        self.mem -= p.mem
        return p

    def rebatch(self, duty: float) -> list[tuple[Piece, int]] | None:
        """The batches every piece needs at another duty cycle, or None if any rule breaks."""
        out = []
        load = mem = 0.0
        for p in self.pieces.values():
            t = p.demand.table
            b = t.batch_for(p.rate, duty)
            if b > t.max_batch or duty + t.lat[b] > p.demand.slo * FIT:
                return None
            load += t.lat[b]
            mem += t.mem[b]
            out.append((p, b))
        if load > duty * FIT or mem > self.gclass.memory:
            return None
        return out

    def set_duty(self, duty: float, batches: list[tuple[Piece, int]]) -> None:
        self.duty = duty
        for p, b in batches:
            p.batch = b
        self.load = sum(p.lat for p in self.pieces.values())
        self.mem = sum(p.mem for p in self.pieces.values())

    def balance(self, steps: int = 6) -> None:
        """Shorten the cycle until the time it uses matches the memory it holds.

        Where memory fills faster than time, a shorter cycle (smaller batches, less
        memory) leaves room for more sessions; bisects on the cycle length.
        """
        cap = self.gclass.memory
        if not math.isfinite(cap) or self.mem / cap <= self.occupancy:
            return
        lo, hi = self.load, self.duty  # no cycle shorter than Σ l can hold the batches
        best = None
        for _ in range(steps):
            mid = (lo + hi) / 2
            nb = self.rebatch(mid)
            if nb is None:
                lo = mid
                continue
            load = sum(p.demand.table.lat[b] for p, b in nb)
            mem = sum(p.demand.table.mem[b] for p, b in nb)
            if mem / cap > load / mid:
                hi, best = mid, (mid, nb)
            else:
                lo, best = mid, (mid, nb)
        if best is not None:
            self.set_duty(*best)

    def stretch(self, mem_weight: float = 0.0) -> None:
        """Lengthen the cycle as far as every piece's SLO allows, if that lowers the cost
        occupancy + mem_weight · memory share.

        Longer cycles mean larger batches, and a batch's fixed cost is paid once; but
        larger batches hold more memory.
        """
        mc = self.gclass.memory
        longest = min(
            p.demand.table.max_duty(p.rate, p.demand.slo, mc) for p in self.pieces.values()
        )
        if longest <= self.duty:
            return
        nb = self.rebatch(longest)
        if nb is not None:
            load = sum(p.demand.table.lat[b] for p, b in nb)
            mem = sum(p.demand.table.mem[b] for p, b in nb)
            w = mem_weight / mc if math.isfinite(mc) else 0.0
            if load / longest + w * mem < self.occupancy + w * self.mem:
                self.set_duty(longest, nb)
