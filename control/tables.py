"""l(b) and memory(b) tabulated at every integer batch size, and the per-session
quantities the scheduler derives from them (DESIGN.md, "Scheduling semantics").

Batches are integers, so tabulating l(b) once per (model, GPU type) turns every
later evaluation into a list index: the packers call these millions of times.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_batch", len(self.lat) - 1)

    def batch_for(self, rate: float, duty: float) -> int:
        """The smallest batch holding one cycle's arrivals: ceil(r·d/1000), at least 1."""
        return max(1, math.ceil(rate * duty / 1000.0 - EPS))

    def saturated_batch(self, slo: float, mem_cap: float = math.inf) -> int | None:
        """Nexus's saturated batch: the largest b with 2·l(b) ≤ SLO that fits in memory."""
        for b in range(self.max_batch, 0, -1):
            if 2 * self.lat[b] <= slo and self.mem[b] <= mem_cap:
                return b
        return None

    def peak_batch(self, slo: float, mem_cap: float = math.inf) -> int | None:
        """The batch of highest throughput b/l(b) with 2·l(b) ≤ SLO that fits in memory."""
        best, best_tp = None, 0.0
        for b in range(1, self.max_batch + 1):
            if 2 * self.lat[b] <= slo and self.mem[b] <= mem_cap:
                tp = b / self.lat[b]
                if tp >= best_tp:
                    best, best_tp = b, tp
        return best

    def need(self, rate: float, slo: float) -> float:
        """DESIGN.md's lower bound for one session: min over b of l(b)/d_max(b), in GPUs."""
        best = math.inf
        for b in range(1, self.max_batch + 1):
            lb = self.lat[b]
            if 2 * lb <= slo:
                best = 0.0 if rate <= 0 else min(best, lb / min(1000.0 * b / rate, slo - lb))
        return best

    def alone(
        self, rate: float, slo: float, mem_cap: float = math.inf, mem_weight: float = 0.0
    ) -> tuple[int, float] | None:
        """(batch, duty) for `rate` alone on one GPU, if it fits one, of least cost
        l(b)/d + mem_weight · memory(b)/mem_cap: with weight 0 the least occupancy; a
        positive weight trades time for memory where memory is what runs out."""
        best: tuple[int, float] | None = None
        best_cost = math.inf
        per_byte = mem_weight / mem_cap if math.isfinite(mem_cap) else 0.0
        # Batches beyond r·SLO/1000 + 1 would need a cycle longer than the SLO.
        top = min(self.max_batch, int(rate * slo / 1000.0) + 1)
        for b in range(1, top + 1):
            d = min(1000.0 * b / rate, slo - self.lat[b])
            if d <= 0:
                continue
            # The SLO may cut the cycle short of b arrivals: judge the batch it really gets.
            real = self.batch_for(rate, d)
            lb = self.lat[real]
            if self.mem[real] > mem_cap or d < lb or d + lb > slo:
                continue
            cost = lb / d + per_byte * self.mem[real]
            if cost < best_cost:
                best, best_cost = (real, d), cost
        return best

    def max_duty(self, rate: float, slo: float, mem_cap: float = math.inf) -> float:
        """The longest duty cycle d with d + l(ceil(r·d/1000)) ≤ SLO (0 when none).

        A batch b serves duty cycles in ((b−1)·1000/r, b·1000/r]; within that range
        the SLO caps d at SLO − l(b).
        """
        best = 0.0
        step = 1000.0 / rate
        for b in range(1, self.max_batch + 1):
            if self.mem[b] > mem_cap:
                continue
            lo = (b - 1) * step
            if lo >= slo:
                break
            d = min(b * step, slo - self.lat[b])
            if d > lo and d > best:
                best = d
        return best


def _cummax(xs: list[float]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(xs, max))
