"""BatchTable's per-session quantities, computed over numpy arrays, equal the loops they
replaced (kept here as the reference) on plausible and non-monotone profiles."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.workloads import synthetic_profiles
from control.tables import EPS, BatchTable


def ref_saturated(t: BatchTable, slo: float, cap: float) -> int | None:
    for b in range(t.max_batch, 0, -1):
        if 2 * t.lat[b] <= slo and t.mem[b] <= cap:
            return b
    return None


def ref_peak(t: BatchTable, slo: float, cap: float) -> int | None:
    best, best_tp = None, 0.0
    for b in range(1, t.max_batch + 1):
        if 2 * t.lat[b] <= slo and t.mem[b] <= cap:
            tp = b / t.lat[b]
            if tp >= best_tp:
                best, best_tp = b, tp
    return best


def ref_need(t: BatchTable, rate: float, slo: float) -> float:
    best = math.inf
    for b in range(1, t.max_batch + 1):
        lb = t.lat[b]
        if 2 * lb <= slo:
            best = 0.0 if rate <= 0 else min(best, lb / min(1000.0 * b / rate, slo - lb))
    return best


def ref_alone(t: BatchTable, rate: float, slo: float, cap: float, w: float):
    best, best_cost = None, math.inf
    per_byte = w / cap if math.isfinite(cap) else 0.0
    top = min(t.max_batch, int(rate * slo / 1000.0) + 1)
    for b in range(1, top + 1):
        d = min(1000.0 * b / rate, slo - t.lat[b])
        if d <= 0:
            continue
        real = max(1, math.ceil(rate * d / 1000.0 - EPS))
        lb = t.lat[real]
        if t.mem[real] > cap or d < lb or d + lb > slo:
            continue
        cost = lb / d + per_byte * t.mem[real]
        if cost < best_cost:
            best, best_cost = (real, d), cost
    return best


def ref_max_duty(t: BatchTable, rate: float, slo: float, cap: float) -> float:
    best, step = 0.0, 1000.0 / rate
    for b in range(1, t.max_batch + 1):
        if t.mem[b] > cap:
            continue
        lo = (b - 1) * step
        if lo >= slo:
            break
        d = min(b * step, slo - t.lat[b])
        if d > lo and d > best:
            best = d
    return best


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10**6),
    st.booleans(),
    st.floats(0.5, 6000.0),
    st.floats(1.0, 300.0),
    st.sampled_from([math.inf, 3e8, 1e9, 4e9]),
    st.sampled_from([0.0, 0.5, 1.0]),
)
def test_vectorised_quantities_equal_the_loops(seed, monotone, rate, slo, cap, w):
    ps = synthetic_profiles(seed, 2, monotone=monotone)
    for curve in ps.curves().values():
        t = BatchTable.from_curve(curve)
        assert t.saturated_batch(slo, cap) == ref_saturated(t, slo, cap)
        assert t.peak_batch(slo, cap) == ref_peak(t, slo, cap)
        assert t.need(rate, slo) == ref_need(t, rate, slo)
        assert t.need(0.0, slo) == ref_need(t, 0.0, slo)
        assert t.alone(rate, slo, cap, w) == ref_alone(t, rate, slo, cap, w)
        assert t.max_duty(rate, slo, cap) == ref_max_duty(t, rate, slo, cap)
        assert t.floor == min(t.lat)


def test_prefetch_fills_the_memo_with_the_same_values():
    ps = synthetic_profiles(7, 3, monotone=False)
    rates = [0.5 * 1.7**k for k in range(20)]
    slos = [3.0 + 11 * k for k in range(20)]
    for curve in ps.curves().values():
        fresh, warm = BatchTable.from_curve(curve), BatchTable.from_curve(curve)
        for kind in ("sat", "peak", "need", "alone", "duty"):
            warm.prefetch(kind, rates, slos, 1e9, 0.5)
        assert len(warm.memo) == 5 * 20
        for r, s in zip(rates, slos, strict=True):
            assert warm.saturated_batch(s, 1e9) == fresh.saturated_batch(s, 1e9)
            assert warm.peak_batch(s, 1e9) == fresh.peak_batch(s, 1e9)
            assert warm.need(r, s) == fresh.need(r, s)
            assert warm.alone(r, s, 1e9, 0.5) == fresh.alone(r, s, 1e9, 0.5)
            assert warm.max_duty(r, s, 1e9) == fresh.max_duty(r, s, 1e9)
        assert len(warm.memo) == 5 * 20  # every call above was a hit
