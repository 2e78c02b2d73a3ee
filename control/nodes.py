"""A GPU node being packed: duty cycle d, and one batch per session per cycle.

The node keeps DESIGN.md's per-GPU invariants true at every step: Σ l(b) ≤ d,
d + l(b) ≤ SLO, r·d/1000 ≤ b ≤ max batch, Σ memory(b) ≤ the GPU's memory. Batches
are the least that hold a cycle's arrivals, b = ceil(r·d/1000), except where a node
is built at a given batch (`Node.alone`, `Node.fit_at`); every method that would
break an invariant refuses instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from control.problem import Demand, GpuClass
from control.tables import EPS

# Sums of latencies are accumulated in different orders by different callers: EPS of
# allowance keeps them agreeing.
FIT = 1.0 + EPS
# Bisection steps when balancing a node's cycle: 6 halvings find it within 1/64 of the
# interval; each step costs a re-batch of the node.
BALANCE_STEPS = 6


def least_batches(
    pieces: Iterable[Piece], duty: float, memory: float, load: float = 0.0, mem: float = 0.0
) -> tuple[list[int], float, float] | None:
    """Each piece's least batch for its rate at cycle `duty`, with Σ l and Σ memory added
    to `load` and `mem`; None if a batch passes its profile or its SLO, or the sums pass
    the cycle or the GPU's `memory`. The one batch-rebuild loop of the packers (their
    hottest after Node.cost: kept free of helper calls)."""
    batches = []
    for p in pieces:
        d = p.demand
        t = d.table
        b = t.batch_for(p.rate, duty)
        if b > t.max_batch or duty + t.lat[b] > d.slo * FIT:
            return None
        load += t.lat[b]
        mem += t.mem[b]
        batches.append(b)
    if load > duty * FIT or mem > memory:
        return None
    return batches, load, mem


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


@dataclass(slots=True, eq=False)
class Node:
    """Compared by identity (eq=False): the packers find and drop nodes in lists."""

    gclass: GpuClass
    duty: float
    pieces: dict[str, Piece] = field(default_factory=dict)
    load: float = 0.0  # Σ l(b) in ms
    mem: float = 0.0
    gpu: str | None = None  # a fixed GPU id (fleet placement, incremental re-planning)

    @classmethod
    def alone(cls, d: Demand, rate: float, batch: int, duty: float | None = None) -> Node:
        """`rate` of `d` alone at `batch`, on cycle `duty` (default l(batch): batches back
        to back). The batch may exceed ceil(r·d/1000); it still holds the arrivals."""
        t = d.table
        node = cls(d.gclass, t.lat[batch] if duty is None else duty)
        node.pieces[d.id] = Piece(d, rate, batch)
        node.load, node.mem = t.lat[batch], t.mem[batch]
        return node

    @classmethod
    def of(cls, gclass: GpuClass, duty: float, pieces: Iterable[Piece]) -> Node | None:
        """A node holding the pieces' rates at cycle `duty` with least batches, or None."""
        pieces = list(pieces)
        got = least_batches(pieces, duty, gclass.memory)
        if got is None:
            return None
        node = cls(gclass, duty)
        node.pieces = {
            p.demand.id: Piece(p.demand, p.rate, b) for p, b in zip(pieces, got[0], strict=True)
        }
        node.load = sum(p.lat for p in node.pieces.values())
        node.mem = sum(p.mem for p in node.pieces.values())
        return node

    def copy(self) -> Node:
        """A copy to undo changes with (`restore`): its pieces are copies too."""
        pieces = {k: Piece(p.demand, p.rate, p.batch) for k, p in self.pieces.items()}
        return Node(self.gclass, self.duty, pieces, self.load, self.mem, self.gpu)

    def restore(self, before: Node) -> None:
        """Undo every change since `before = self.copy()`."""
        self.pieces, self.duty = before.pieces, before.duty
        self.load, self.mem = before.load, before.mem

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
            b = math.ceil(rate * duty / 1000.0 - EPS)
            ol = om = 0.0
        else:
            b = math.ceil((rate + old.rate) * duty / 1000.0 - EPS)
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
        self.apply(d, rate, c)
        return True

    def apply(self, d: Demand, rate: float, c: tuple[int, float, float]) -> None:
        """Add `rate` of `d` at the cost `self.cost(d, rate)` returned, with `d`'s piece,
        the cycle, and the room that cost needs unchanged since."""
        b, dl, dm = c
        old = self.pieces.get(d.id)
        if old is None:
            self.pieces[d.id] = Piece(d, rate, b)
        else:
            old.rate += rate
            old.batch = b
        self.load += dl
        self.mem += dm

    def fit_at(self, d: Demand, rate: float, batch: int) -> bool:
        """Add `rate` of `d` at a given batch, where it holds a cycle's arrivals and every
        rule holds: a previous plan's batch, kept where the least one does not fit (with
        a non-monotone profile the least batch can be the slower one)."""
        t = d.table
        if d.id in self.pieces or not t.batch_for(rate, self.duty) <= batch <= t.max_batch:
            return False
        lb, mb = t.lat[batch], t.mem[batch]
        if self.duty + lb > d.slo * FIT or self.load + lb > self.duty * FIT:
            return False
        if self.mem + mb > self.gclass.memory:
            return False
        self.pieces[d.id] = Piece(d, rate, batch)
        self.load += lb
        self.mem += mb
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
        got = self._shrunk(d, rate, duty)
        return None if got is None else (got[1], got[2])

    def _shrunk(self, d: Demand, rate: float, duty: float) -> tuple[list[int], float, float] | None:
        # Batches are least_batches' to choose: the new pieces' 1 is a placeholder.
        old = self.pieces.get(d.id)
        if old is None:
            pieces = [*self.pieces.values(), Piece(d, rate, 1)]
        else:
            pieces = [
                Piece(p.demand, p.rate + rate, 1) if p is old else p for p in self.pieces.values()
            ]
        return least_batches(pieces, duty, self.gclass.memory)

    def add_shrunk(self, d: Demand, rate: float, duty: float) -> bool:
        got = self._shrunk(d, rate, duty)
        if got is None:
            return False
        old = self.pieces.get(d.id)
        if old is None:
            self.pieces[d.id] = Piece(d, rate, 1)
        else:
            old.rate += rate
        # The batches least_batches chose, in the pieces' order (the new one last).
        for p, b in zip(self.pieces.values(), got[0], strict=True):
            p.batch = b
        self.duty, self.load, self.mem = duty, got[1], got[2]
        return True

    def remove(self, sid: str) -> Piece:
        p = self.pieces.pop(sid)
        self.load -= p.lat
        self.mem -= p.mem
        return p

    def rebatch(self, duty: float) -> list[tuple[Piece, int]] | None:
        """The batches every piece needs at another duty cycle, or None if any rule breaks."""
        pieces = list(self.pieces.values())
        got = least_batches(pieces, duty, self.gclass.memory)
        return None if got is None else list(zip(pieces, got[0], strict=True))

    def set_duty(self, duty: float, batches: list[tuple[Piece, int]]) -> None:
        self.duty = duty
        for p, b in batches:
            p.batch = b
        self.load = sum(p.lat for p in self.pieces.values())
        self.mem = sum(p.mem for p in self.pieces.values())

    def balance(self, steps: int = BALANCE_STEPS) -> None:
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
