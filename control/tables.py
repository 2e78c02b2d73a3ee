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
from itertools import repeat

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
    # Per-session quantities already computed, keyed by kind and arguments (`prefetch`).
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_batch", len(self.lat) - 1)
        lat0, mem0 = np.array(self.lat), np.array(self.mem)
        b = np.arange(1, len(self.lat), dtype=float)
        object.__setattr__(self, "arrays", _Arrays(b, lat0[1:], mem0[1:], lat0, mem0))

    def batch_for(self, rate: float, duty: float) -> int:
        """The smallest batch holding one cycle's arrivals: ceil(r·d/1000), at least 1."""
        return max(1, math.ceil(rate * duty / 1000.0 - EPS))

    # Each quantity below is computed for many sessions at once by its `*_many` form
    # (rows: sessions, columns: batches), in the same floating-point operations as one
    # at a time; `prefetch` fills the memo that the one-session forms read first, so a
    # planner resolves ten thousand sessions in a few array operations per table.

    def saturated_batch(self, slo: float, mem_cap: float = math.inf) -> int | None:
        """Nexus's saturated batch: the largest b with 2·l(b) ≤ SLO that fits in memory."""
        return self._one(("sat", slo, mem_cap), self.saturated_many, [slo], mem_cap)

    def peak_batch(self, slo: float, mem_cap: float = math.inf) -> int | None:
        """The batch of highest throughput b/l(b) with 2·l(b) ≤ SLO that fits in memory
        (the largest such batch on ties)."""
        return self._one(("peak", slo, mem_cap), self.peak_many, [slo], mem_cap)

    def need(self, rate: float, slo: float) -> float:
        """DESIGN.md's lower bound for one session: min over b of l(b)/d_max(b), in GPUs."""
        return self._one(("need", rate, slo), self.need_many, [rate], [slo])

    def alone(
        self, rate: float, slo: float, mem_cap: float = math.inf, mem_weight: float = 0.0
    ) -> tuple[int, float] | None:
        """(batch, duty) for `rate` alone on one GPU, if it fits one, of least cost
        l(b)/d + mem_weight · memory(b)/mem_cap: with weight 0 the least occupancy; a
        positive weight trades time for memory where memory is what runs out."""
        key = ("alone", rate, slo, mem_cap, mem_weight)
        return self._one(key, self.alone_many, [rate], [slo], mem_cap, mem_weight)

    def max_duty(self, rate: float, slo: float, mem_cap: float = math.inf) -> float:
        """The longest duty cycle d with d + l(ceil(r·d/1000)) ≤ SLO (0 when none).

        A batch b serves duty cycles in ((b−1)·1000/r, b·1000/r]; within that range
        the SLO caps d at SLO − l(b).
        """
        return self._one(("duty", rate, slo, mem_cap), self.max_duty_many, [rate], [slo], mem_cap)

    def _one(self, key: tuple, many, *args):  # noqa: ANN001, ANN202
        got = self.memo.get(key, _MISSING)
        if got is _MISSING:
            got = self.memo[key] = many(*args)[0]
        return got

    def prefetch(
        self,
        kind: str,
        rates: list[float],
        slos: list[float],
        mem_cap: float = math.inf,
        mem_weight: float = 0.0,
    ) -> None:
        """Compute `kind` ("sat", "peak", "need", "alone", "duty") for many sessions at
        once into the memo (rates are ignored by "sat" and "peak")."""
        memo = self.memo
        for lo in range(0, len(slos), _ROWS):
            r, s = rates[lo : lo + _ROWS], slos[lo : lo + _ROWS]
            # Keys as the one-session forms build them (_one), stored in one update (the
            # repeats end with the shortest list: strict=False).
            if kind in ("sat", "peak"):
                fn = self.saturated_many if kind == "sat" else self.peak_many
                keys = zip(repeat(kind), s, repeat(mem_cap), strict=False)
                memo.update(zip(keys, fn(s, mem_cap), strict=True))
            elif kind == "need":
                keys = zip(repeat("need"), r, s, strict=False)
                memo.update(zip(keys, self.need_many(r, s), strict=True))
            elif kind == "alone":
                keys = zip(repeat("alone"), r, s, repeat(mem_cap), repeat(mem_weight), strict=False)
                memo.update(zip(keys, self.alone_many(r, s, mem_cap, mem_weight), strict=True))
            else:
                keys = zip(repeat("duty"), r, s, repeat(mem_cap), strict=False)
                memo.update(zip(keys, self.max_duty_many(r, s, mem_cap), strict=True))

    def saturated_many(self, slos: list[float], mem_cap: float) -> list[int | None]:
        a = self.arrays
        ok = (2 * a.lat <= _col(slos)) & (a.mem <= mem_cap)
        last = ok.shape[1] - np.argmax(ok[:, ::-1], axis=1)
        return [int(b) if any_ else None for b, any_ in zip(last, ok.any(axis=1), strict=True)]

    def peak_many(self, slos: list[float], mem_cap: float) -> list[int | None]:
        a = self.arrays
        ok = (2 * a.lat <= _col(slos)) & (a.mem <= mem_cap)
        tp = np.where(ok, a.b / a.lat, -1.0)
        last = ok.shape[1] - np.argmax(tp[:, ::-1], axis=1)
        return [int(b) if any_ else None for b, any_ in zip(last, ok.any(axis=1), strict=True)]

    def need_many(self, rates: list[float], slos: list[float]) -> list[float]:
        a = self.arrays
        rate, slo = _col(rates), _col(slos)
        ok = 2 * a.lat <= slo
        with np.errstate(divide="ignore", invalid="ignore"):
            share = a.lat / np.minimum(1000.0 * a.b / rate, slo - a.lat)
        best = np.where(ok, share, np.inf).min(axis=1)
        best = np.where(ok.any(axis=1) & (rate[:, 0] <= 0), 0.0, best)
        return [float(x) for x in best]

    def alone_many(
        self, rates: list[float], slos: list[float], mem_cap: float, mem_weight: float
    ) -> list[tuple[int, float] | None]:
        a = self.arrays
        rate, slo = _col(rates), _col(slos)
        per_byte = mem_weight / mem_cap if math.isfinite(mem_cap) else 0.0
        # Batches beyond r·SLO/1000 + 1 would need a cycle longer than the SLO.
        top = np.minimum(self.max_batch, np.trunc(rate * slo / 1000.0) + 1)
        d = np.minimum(1000.0 * a.b / rate, slo - a.lat)
        # The SLO may cut the cycle short of b arrivals: judge the batch it really gets.
        real = np.clip(np.ceil(rate * d / 1000.0 - EPS), 1, self.max_batch).astype(np.intp)
        lb, mb = a.lat0[real], a.mem0[real]
        ok = (a.b <= top) & (d > 0) & (mb <= mem_cap) & (d >= lb) & (d + lb <= slo)
        with np.errstate(divide="ignore", invalid="ignore"):
            cost = np.where(ok, lb / d + per_byte * mb, np.inf)
        i = np.argmin(cost, axis=1)
        rows = np.arange(len(rates))
        got = zip(real[rows, i], d[rows, i], ok.any(axis=1), strict=True)
        return [(int(b), float(x)) if any_ else None for b, x, any_ in got]

    def max_duty_many(self, rates: list[float], slos: list[float], mem_cap: float) -> list[float]:
        a = self.arrays
        step = 1000.0 / _col(rates)
        lo = (a.b - 1) * step
        d = np.minimum(a.b * step, _col(slos) - a.lat)
        ok = (a.mem <= mem_cap) & (lo < _col(slos)) & (d > lo)
        best = np.where(ok, d, -np.inf).max(axis=1)
        return [float(x) if x > 0 else 0.0 for x in best]


_MISSING = object()
# Sessions per array operation in `prefetch`: bounds its temporaries (rows × batches).
_ROWS = 1024


def _col(xs: list[float]) -> np.ndarray:
    return np.asarray(xs, dtype=float).reshape(-1, 1)


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
