"""The profiler's pure parts: round order, the stability rule, the monotone fits, and the
rounds loop driven by a scripted server on a manual clock (no tritonserver here)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_repo_tools.profiler import (
    ProfileSettings,
    StabilityRule,
    fit_points,
    is_stable,
    isotonic,
    measure_rounds,
    round_order,
    running_max,
)
from model_repo_tools.profiles import ProfileSet

VALUES = st.lists(st.floats(-100, 100, allow_nan=False), min_size=0, max_size=40)
SMALL = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=7)


def _l2(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def _nondecreasing(xs: list[float]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(xs))


def _brute_force(ys: list[float]) -> list[float]:
    """The least-squares non-decreasing fit by enumeration: the optimum is constant on
    contiguous blocks, each at its block's mean, so try every split into blocks."""
    best: list[float] | None = None
    n = len(ys)
    for cuts in itertools.product((False, True), repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        fit = []
        for lo, hi in itertools.pairwise(bounds):
            fit += [sum(ys[lo:hi]) / (hi - lo)] * (hi - lo)
        if _nondecreasing(fit) and (best is None or _l2(fit, ys) < _l2(best, ys)):
            best = fit
    assert best is not None
    return best


@given(VALUES)
def test_isotonic_is_non_decreasing_and_keeps_the_mean(ys: list[float]) -> None:
    fit = isotonic(ys)
    assert len(fit) == len(ys) and _nondecreasing(fit)
    assert sum(fit) == pytest.approx(sum(ys), abs=1e-6)  # each pool keeps its sum


@given(VALUES)
def test_isotonic_leaves_a_monotone_input_alone(ys: list[float]) -> None:
    ys = sorted(ys)
    assert isotonic(ys) == ys


@given(SMALL)
def test_isotonic_is_the_closest_monotone_sequence(ys: list[float]) -> None:
    assert isotonic(ys) == pytest.approx(_brute_force(ys), abs=1e-9)


@given(SMALL, st.data())
def test_no_monotone_sequence_is_closer(ys: list[float], data: st.DataObject) -> None:
    other = sorted(data.draw(st.lists(st.floats(-6, 6), min_size=len(ys), max_size=len(ys))))
    assert _l2(isotonic(ys), ys) <= _l2(other, ys) + 1e-9


def test_isotonic_weights_pull_a_pool_towards_the_heavier_value() -> None:
    assert isotonic([3.0, 1.0], [1, 3]) == [1.5, 1.5]
    assert isotonic([1.75, 0.93, 1.2]) == pytest.approx([1.29, 1.29, 1.29], abs=0.01)


@given(st.lists(st.integers(0, 10**9), max_size=20))
def test_running_max_is_the_least_monotone_bound(xs: list[int]) -> None:
    out = running_max(xs)
    assert _nondecreasing(out) and all(o >= x for o, x in zip(out, xs, strict=True))
    assert running_max(sorted(xs)) == sorted(xs)


def test_round_order_alternates_so_every_size_leads_and_trails() -> None:
    sizes = (1, 2, 4, 8)
    assert round_order(sizes, 0) == (1, 2, 4, 8)
    assert round_order(sizes, 1) == (8, 4, 2, 1)
    assert round_order(sizes, 2) == (1, 2, 4, 8)


RULE = StabilityRule(tolerance=0.02, floor_ms=0.01, patience=2, min_rounds=3)


def test_stable_only_after_patience_quiet_rounds_and_min_rounds() -> None:
    flat = {1: 1.0, 8: 2.0}
    assert not is_stable([flat], RULE)
    assert not is_stable([flat, flat], RULE)  # patience 2 needs three rounds
    assert is_stable([flat, flat, flat], RULE)
    assert not is_stable([flat] * 3, StabilityRule(patience=2, min_rounds=4))


def test_one_size_moving_keeps_the_rounds_going() -> None:
    a = {1: 1.0, 8: 2.0}
    b = {1: 1.0, 8: 2.1}  # 5 % on the big size
    assert not is_stable([a, a, b], RULE)
    assert not is_stable([a, b, b], RULE)  # one quiet round after a move is not enough
    assert is_stable([a, b, b, b], RULE)


def test_tolerance_is_relative_with_an_absolute_floor() -> None:
    assert is_stable([{1: 10.0}, {1: 10.19}, {1: 10.0}], RULE)  # under 2 %
    assert not is_stable([{1: 10.0}, {1: 10.3}, {1: 10.3}], RULE)
    assert is_stable([{1: 0.10}, {1: 0.108}, {1: 0.10}], RULE)  # 8 % but under 0.01 ms


class ScriptedServer:
    """run_once for measure_rounds: latency(batch, call index) ms, advancing a manual clock."""

    def __init__(self, latency) -> None:
        self.latency = latency
        self.now = 0.0
        self.calls: list[int] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, batch: int) -> float:
        ms = self.latency(batch, len(self.calls), self.now)
        self.calls.append(batch)
        self.now += ms / 1000
        return ms


def _settings(**kw) -> ProfileSettings:
    base = {"runs": 4, "stability": RULE, "min_s": 0.0, "max_rounds": 50, "budget_s": 10.0}
    return ProfileSettings(**(base | kw))


def test_steady_server_stops_as_soon_as_the_rule_allows() -> None:
    server = ScriptedServer(lambda b, i, t: 1.0 + 0.1 * b)
    m = measure_rounds(server, (1, 4, 16), _settings(), server.clock)
    assert m.stable and m.rounds == 3
    assert {b: len(v) for b, v in m.samples.items()} == {1: 12, 4: 12, 16: 12}
    # Rounds interleave the sizes: 1,4,16 then 16,4,1 then 1,4,16, each `runs` calls long.
    blocks = [k for k, _ in itertools.groupby(server.calls)]
    assert blocks == [1, 4, 16, 4, 1, 4, 16]


def test_min_s_keeps_a_quick_stable_model_measuring() -> None:
    server = ScriptedServer(lambda b, i, t: 1.0)
    m = measure_rounds(server, (1, 2), _settings(min_s=0.5, max_rounds=10**6), server.clock)
    assert m.stable and m.elapsed_s >= 0.5 and m.rounds == 63  # 8 ms per round


def test_a_drifting_server_spends_the_budget_and_says_so() -> None:
    server = ScriptedServer(lambda b, i, t: 1.0 + i * 0.05)  # slower every call
    m = measure_rounds(server, (1, 2), _settings(budget_s=1.0, max_rounds=10**6), server.clock)
    assert not m.stable and 1.0 <= m.elapsed_s < 1.5
    server = ScriptedServer(lambda b, i, t: 1.0 + i * 0.05)
    m = measure_rounds(server, (1, 2), _settings(max_rounds=7), server.clock)
    assert not m.stable and m.rounds == 7


def test_a_noisy_second_lands_on_every_size_and_the_fit_stays_monotone() -> None:
    # 2 ms + 0.1 ms per sample in the batch, tripled while the machine is busy (0.2–0.6 s).
    def latency(b: int, i: int, t: float) -> float:
        return (2.0 + 0.1 * b) * (3.0 if 0.2 <= t < 0.6 else 1.0)

    server = ScriptedServer(latency)
    sizes = (1, 2, 4, 8)
    m = measure_rounds(server, sizes, _settings(min_s=1.0, max_rounds=10**6), server.clock)
    noisy = {b: sum(1 for ms in m.samples[b] if ms > 2.0 + 0.1 * b + 1e-9) for b in sizes}
    assert min(noisy.values()) > 0.6 * max(noisy.values())
    fitted = fit_points(m.samples, dict.fromkeys(sizes, 0), 50.0)
    assert [p.latency_ms for p in fitted.points] == [2.1, 2.2, 2.4, 2.8]


def test_fit_points_rows_are_monotone_and_carry_their_spread() -> None:
    samples = {1: [1.7, 1.75, 1.8, 5.0], 4: [0.9, 0.93, 0.95, 1.0], 8: [2.0, 2.0, 2.1, 2.2]}
    memory = {1: 300, 4: 200, 8: 500}
    fitted = fit_points(samples, memory, 50.0)
    rows = fitted.points
    assert fitted.measured_ms == pytest.approx({1: 1.775, 4: 0.94, 8: 2.05})
    assert [p.latency_ms for p in rows] == pytest.approx([1.3575, 1.3575, 2.05])
    assert [p.memory_bytes for p in rows] == [300, 300, 500]
    assert rows[0].samples == 4 and rows[0].p10_ms <= rows[0].p90_ms == pytest.approx(4.04)
    ten = {1: [float(i) for i in range(1, 11)]}
    assert fit_points(ten, {1: 0}, 90.0).points[0].latency_ms == pytest.approx(9.1)


def test_rows_with_spread_round_trip_and_old_rows_still_load(tmp_path) -> None:
    old = '{"version": 1, "profiles": [{"model": "m", "gpu_type": "cpu", "batches": [{"batch": 1, "latency_ms": 1.0}]}]}'  # noqa: E501
    (tmp_path / "old.json").write_text(old)
    ps = ProfileSet.load(tmp_path / "old.json")
    assert ps.profiles[0].batches[0].samples is None
    ps.save(tmp_path / "again.json")
    assert "samples" not in (tmp_path / "again.json").read_text()  # no nulls written
    fitted = fit_points({1: [1.0, 1.2]}, {1: 0}, 50.0)
    new = ps.model_copy(
        update={"profiles": [ps.profiles[0].model_copy(update={"batches": fitted.points})]}
    )
    new.save(tmp_path / "new.json")
    [row] = ProfileSet.load(tmp_path / "new.json").profiles[0].batches
    assert (row.latency_ms, row.samples) == (1.1, 2) and row.p10_ms < row.p90_ms
