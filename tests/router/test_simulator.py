"""router.simulator: the policy on a virtual clock; overload, slow servers, outages."""

from __future__ import annotations

import pytest

from control.types import Plan
from router.native import active
from router.policy import BatchPolicy
from router.simulator import (
    Outage,
    Simulator,
    compare_drop_modes,
    poisson_arrivals,
    profile_latency,
    simulate,
)
from router.testing import curves, eventful_run, plan
from router.types import Request


def _plan(gpus: int = 1) -> Plan:
    """Batch 8 (l=12 ms), duty cycle 20 ms, SLO 50 ms: 400 req/s planned per GPU,
    capacity 8 / 12 ms = 667 req/s, so 2x load is a real overload."""
    p = plan(*[(f"g{i}", 20.0, [("s", "m", 8, 50.0)]) for i in range(gpus)])
    for g in p.gpus:
        for a in g.allocations:
            a.rate = 400.0
    return p


def test_poisson_arrivals_match_the_planned_rate() -> None:
    trace = poisson_arrivals(_plan(2), 10_000.0, load=1.5, seed=3)
    assert len(trace) == pytest.approx(800 * 1.5 * 10, rel=0.05)
    assert all(r.deadline == r.arrival + 50.0 for r in trace)
    assert [r.arrival for r in trace] == sorted(r.arrival for r in trace)


@pytest.mark.parametrize("noise_cv", [0.0, 0.1])
def test_early_drop_holds_goodput_under_2x_overload(noise_cv: float) -> None:
    p = _plan()
    one = compare_drop_modes(p, curves(), load=1.0, duration_ms=5_000.0, noise_cv=noise_cv)
    two = compare_drop_modes(p, curves(), load=2.0, duration_ms=5_000.0, noise_cv=noise_cv)
    assert one["early"].drop_rate < 0.01 and one["early"].late_rate < 0.01
    assert two["early"].goodput >= 0.8 * one["early"].goodput
    assert two["early"].goodput > 2 * two["none"].goodput
    assert two["early"].goodput > two["lazy"].goodput
    assert two["early"].late_rate < 0.05
    assert set(two["early"].dropped) <= {"deadline", "expired"}


def test_honest_profile_means_no_late_answer_under_early_drop() -> None:
    for load in (0.5, 1.0, 3.0):
        st = simulate(_plan(2), curves(), poisson_arrivals(_plan(2), 3_000.0, load=load)).stats()
        assert st.late == 0, (load, st)


def test_online_correction_keeps_a_slow_server_honest() -> None:
    p = _plan()
    trace = lambda: poisson_arrivals(p, 5_000.0, load=1.2, seed=1)  # noqa: E731
    # The server runs 1.5x slower than profiled: 1.2x load is an overload for it.
    blind = simulate(p, curves(), trace(), speed=1.5, alpha=0.0).stats()
    honest = simulate(p, curves(), trace(), speed=1.5).stats()
    assert blind.late_rate > 0.1
    assert honest.late_rate < 0.01
    assert honest.goodput > blind.goodput


def test_outage_rehomes_to_the_other_gpu_and_loses_nothing() -> None:
    p = _plan(2)
    trace = poisson_arrivals(p, 4_000.0, load=0.8, seed=2)
    res = simulate(p, curves(), trace, outages=[Outage("g0", 1_000.0, 2_000.0)])
    st = res.stats()
    assert st.offered == len(trace)  # one outcome each (the simulator checks "exactly")
    during = [d for t, d in res.dispatches if 1_000.0 < t < 2_000.0]
    assert during and all(d.gpu == "g1" for d in during)
    assert any(d.gpu == "g0" for t, d in res.dispatches if t > 2_000.0)
    # 0.8 x 800 req/s on one 667 req/s GPU for a second: some drops, but most is served.
    assert st.on_time > 0.85 * st.offered


def test_whole_fleet_down_drops_server_down_and_no_server() -> None:
    p = _plan()
    trace = poisson_arrivals(p, 2_000.0, load=1.0, seed=4)
    st = simulate(p, curves(), trace, outages=[Outage("g0", 500.0, 1_000.0)]).stats()
    assert st.dropped.get("no_server", 0) > 150  # ~400 req/s for 0.5 s
    assert set(st.dropped) <= {"no_server", "server_down", "deadline"}


class _FullSettle(BatchPolicy):
    """The policy as it was before settle learned to skip: every session pruned and every
    GPU visited at every settle."""

    def _settle(self, now: float, out: list) -> None:  # type: ignore[override]
        self._all = True
        super()._settle(now, out)


# _FullSettle subclasses BatchPolicy: a class compiled by mypyc cannot be subclassed from
# Python, so these run on the Python modules only (`make test`); tests/router/test_native.py
# checks that the compiled modules act as the Python ones.
python_only = pytest.mark.skipif(active(), reason="subclasses the policy: Python modules only")


@python_only
@pytest.mark.parametrize("mode", ["early", "lazy", "none"])
def test_settle_that_skips_acts_as_one_that_visits_everything(mode: str) -> None:
    """The doom heap, the dirty GPUs and the duty-cycle catch-up change nothing."""
    runs = []
    for cls in (BatchPolicy, _FullSettle):
        res = eventful_run(cls, mode)  # type: ignore[arg-type]
        runs.append(
            (
                [(t, d.gpu, tuple(r.id for r in d.requests)) for t, d in res.dispatches],
                [(t, x.request.id, x.reason) for t, x in res.drops],
            )
        )
    assert runs[0] == runs[1]
    assert len(runs[0][0]) > 300 and len(runs[0][1]) > 50


@python_only
def test_idle_gpus_restart_their_duty_cycle_as_if_visited_at_every_settle() -> None:
    """An idle GPU skipped by settles still starts its cycles where those visits would have
    (found by removing `catch_up`: this trace then dispatches differently)."""
    p = plan(
        ("g0", 20.0, [("a", "m", 4, 50.0), ("b", "n", 4, 40.0), ("e", "n", 8, 80.0)]),
        ("g1", 15.0, [("c", "n", 8, 45.0)]),
        ("g2", 7.0, [("d", "m", 1, 30.0)]),
    )
    rates = iter([50.0, 20.0, 50.0, 100.0, 50.0])
    for g in p.gpus:
        for a in g.allocations:
            a.rate = next(rates)
    cv = curves(m={1: 5.0, 4: 8.0, 8: 12.0}, n={1: 3.0, 4: 6.0, 8: 11.0})
    trace = poisson_arrivals(p, 1_000.0, load=0.6, seed=0)
    runs = []
    for cls in (BatchPolicy, _FullSettle):
        lat = profile_latency(p, cv, noise_cv=0.2, seed=0)
        res = Simulator(cls(p, cv), lat).run(
            [Request(r.id, r.session, r.arrival, r.deadline) for r in trace]
        )
        runs.append([(t, d.gpu, tuple(r.id for r in d.requests)) for t, d in res.dispatches])
    assert runs[0] == runs[1]
