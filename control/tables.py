"""l(b) and memory(b) tabulated at every integer batch size, and the per-session
quantities the scheduler derives from them (DESIGN.md, "Scheduling semantics").

Batches are integers, so tabulating l(b) once per (model, GPU type) turns every
later evaluation into a list index: the packers call these millions of times.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from model_repo_tools.profiles import LatencyCurve

# The scheduler's one float allowance, a part per billion: r·d/1000 computed in floats
# can land a hair above an integer it equals exactly, sums of latencies accumulated in
# different orders differ in their last bits, and a rate left over after splitting may
# be a rounding residue rather than demand. The validator allows 1e-6, well above it.
EPS = 1e-9


@dataclass(slots=True, frozen=True)
class BatchTable:
    """l(b) and memory(b) for b = 0..max_batch (index 0 repeats batch 1)."""

    curve: LatencyCurve  # what it tabulates: the model and GPU type's profile
    lat: tuple[float, ...]
    mem: tuple[float, ...]
    # Running maxima of lat and mem: bisecting them finds the largest batch such that
    # every smaller batch also fits, which stays right when a profile is not monotone.
    cumlat: tuple[float, ...] = ()
    cummem: tuple[float, ...] = ()
    # The least l(b) of any batch: no piece of this model costs a cycle less (pruning).
    floor: float = 0.0

    @classmethod
    def from_curve(cls, c: LatencyCurve) -> BatchTable:
        lat = [c.latency(b) for b in range(1, c.max_batch + 1)]
        mem = [c.memory(b) for b in range(1, c.max_batch + 1)]
        lat, mem = [lat[0], *lat], [mem[0], *mem]
        return cls(c, tuple(lat), tuple(mem), _cummax(lat), _cummax(mem), min(lat))

    def largest_fitting(self, lat_room: float, mem_room: float) -> int:
        """The largest b such that every batch up to b has l ≤ lat_room and memory ≤ mem_room."""
        k = min(
            bisect.bisect_right(self.cumlat, lat_room), bisect.bisect_right(self.cummem, mem_room)
        )
        return max(0, k - 1)

    max_batch: int = 0
    arrays: _Arrays = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_batch", len(self.lat) - 1)
        lat0, mem0 = np.array(self.lat), np.array(self.mem)
        b = np.arange(1, len(self.lat), dtype=float)
        object.__setattr__(self, "arrays", _Arrays(b, lat0[1:], mem0[1:], lat0, mem0))

    def batch_for(self, rate: float, duty: float) -> int:
        """The smallest batch holding one cycle's arrivals: ceil(r·d/1000), at least 1."""
        return max(1, math.ceil(rate * duty / 1000.0 - EPS))

    def saturated_batch(self, slo: float, mem_cap: float = math.inf) -> int | None:
        """Nexus's saturated batch: the largest b with 2·l(b) ≤ SLO that fits in memory."""
        a = self.arrays
        ok = np.flatnonzero((2 * a.lat <= slo) & (a.mem <= mem_cap))
        return int(ok[-1]) + 1 if ok.size else None

    def peak_batch(self, slo: float, mem_cap: float = math.inf) -> int | None:
        """The batch of highest throughput b/l(b) with 2·l(b) ≤ SLO that fits in memory
        (the largest such batch on ties)."""
        a = self.arrays
        ok = (2 * a.lat <= slo) & (a.mem <= mem_cap)
        if not ok.any():
            return None
        tp = np.where(ok, a.b / a.lat, -1.0)
        return int(a.b.size - np.argmax(tp[::-1]))

    def need(self, rate: float, slo: float) -> float:
        """DESIGN.md's lower bound for one session: min over b of l(b)/d_max(b), in GPUs."""
        a = self.arrays
        ok = 2 * a.lat <= slo
        if not ok.any():
            return math.inf
        if rate <= 0:
            return 0.0
        share = a.lat / np.minimum(1000.0 * a.b / rate, slo - a.lat)
        return float(share[ok].min())

    def alone(
        self, rate: float, slo: float, mem_cap: float = math.inf, mem_weight: float = 0.0
    ) -> tuple[int, float] | None:
        """(batch, duty) for `rate` alone on one GPU, if it fits one, of least cost
        l(b)/d + mem_weight · memory(b)/mem_cap: with weight 0 the least occupancy; a
        positive weight trades time for memory where memory is what runs out."""
        a = self.arrays
        per_byte = mem_weight / mem_cap if math.isfinite(mem_cap) else 0.0
        # Batches beyond r·SLO/1000 + 1 would need a cycle longer than the SLO.
        top = min(self.max_batch, int(rate * slo / 1000.0) + 1)
        if top < 1:
            return None
        b = a.b[:top]
        d = np.minimum(1000.0 * b / rate, slo - a.lat[:top])
        # The SLO may cut the cycle short of b arrivals: judge the batch it really gets.
        real = np.clip(np.ceil(rate * d / 1000.0 - EPS), 1, self.max_batch).astype(np.intp)
        lb = a.lat0[real]
        mb = a.mem0[real]
        ok = (d > 0) & (mb <= mem_cap) & (d >= lb) & (d + lb <= slo)
        if not ok.any():
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            cost = np.where(ok, lb / d + per_byte * mb, np.inf)
        i = int(np.argmin(cost))
        return int(real[i]), float(d[i])

    def max_duty(self, rate: float, slo: float, mem_cap: float = math.inf) -> float:
        """The longest duty cycle d with d + l(ceil(r·d/1000)) ≤ SLO (0 when none).

        A batch b serves duty cycles in ((b−1)·1000/r, b·1000/r]; within that range
        the SLO caps d at SLO − l(b).
        """
        a = self.arrays
        step = 1000.0 / rate
        lo = (a.b - 1) * step
        d = np.minimum(a.b * step, slo - a.lat)
        ok = (a.mem <= mem_cap) & (lo < slo) & (d > lo)
        return float(d[ok].max()) if ok.any() else 0.0


@dataclass(frozen=True, slots=True)
class _Arrays:
    """The table as numpy arrays over b = 1..max_batch (b, l, memory), and l and memory
    indexed by batch (index 0 repeats batch 1): the per-session quantities above are
    computed over every batch at once, in the same floating-point operations."""

    b: np.ndarray
    lat: np.ndarray
    mem: np.ndarray
    lat0: np.ndarray
    mem0: np.ndarray


def _cummax(xs: list[float]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(xs, max))
