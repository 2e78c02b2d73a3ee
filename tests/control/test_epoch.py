"""The epoch decision as pure logic on a manual clock: epochs, rate bands, the min interval,
failover and failback at once, reconciles, and when to wake."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from control import epoch
from control.epoch import EpochConfig, EpochPolicy, Replan
from control.types import Plan, Session

CONFIG = EpochConfig(epoch_s=30.0, tick_s=1.0, min_interval_s=3.0)


def _plan(gpu: str, session: str = "s", rate: float = 10.0) -> Plan:
    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": gpu,
                    "gpu_type": "t",
                    "duty_cycle_ms": 50.0,
                    "allocations": [
                        {"session": session, "model": "m", "batch": 4, "rate": rate, "slo_ms": 100}
                    ],
                }
            ]
        }
    )


def _planned_at(now: float, rates: dict[str, float] | None = None) -> EpochPolicy:
    """A policy whose last re-plan began at `now`, for `rates`."""
    p = EpochPolicy(CONFIG)
    p.replan_started(now)
    p.planned(rates or {"s": 10.0}, outage_over=True)
    return p


def test_nothing_between_epochs_and_an_epoch_on_time() -> None:
    p = _planned_at(0.0)
    d = p.decide(5.0, {"s": 10.0})
    assert d.replan is None and d.reconcile == frozenset() and d.wake_at == 6.0  # next tick
    d = p.decide(29.5, {})
    assert d.replan is None and d.wake_at == 30.0  # the epoch comes before the next tick
    assert p.decide(30.0, {}).replan == Replan("epoch", "epoch")


def test_a_rate_out_of_its_band_replans_after_the_min_interval() -> None:
    p = _planned_at(0.0)
    assert p.decide(10.0, {"s": 10.9}).replan is None  # inside [0.8, 1.1] x 10
    assert p.decide(10.0, {"s": 8.5}).replan is None
    assert p.decide(10.0, {"other": 99.0}).replan is None  # not planned for: no band
    d = p.decide(10.0, {"s": 12.0})
    assert d.replan == Replan("rate of s: 12.0 req/s against 10.0 planned", "rate of s")
    # Too soon after the last re-plan: wait, and wake when it is allowed.
    d = p.decide(1.5, {"s": 30.0})
    assert d.replan is None and d.wake_at == 2.5
    d = p.decide(2.5, {"s": 30.0})
    assert d.replan is None and d.wake_at == 3.0
    assert p.decide(3.0, {"s": 30.0}).replan is not None


def test_sessions_changed_replans_and_a_change_during_a_replan_is_kept() -> None:
    p = _planned_at(0.0)
    p.sessions_changed()
    assert p.decide(1.0, {}).wake_at == 2.0
    d = p.decide(3.0, {})
    assert d.replan == Replan("sessions changed", "sessions changed")
    p.replan_started(3.0)
    p.sessions_changed()  # while the scheduler runs: the plan may not have it
    p.planned({"s": 10.0}, outage_over=True)
    assert p.decide(5.0, {}).replan is None
    assert p.decide(6.0, {}).replan == Replan("sessions changed", "sessions changed")


def test_failover_is_at_once_and_failback_starts_from_the_plan_before_the_outage() -> None:
    home, elsewhere, later = _plan("g0"), _plan("g1"), _plan("g2")
    p = _planned_at(0.0)
    p.reconcile_requested("h:2")
    p.health_changed([("h:0", "down")], home)
    assert p.urgent
    d = p.decide(0.5, {})  # inside the min interval: a failover does not wait
    assert d.replan == Replan("failover: server h:0 down", "failover") and not p.urgent
    assert d.reconcile == frozenset()  # the failover first; the reconcile at the next decision
    assert p.base(d.replan, home) is home  # not a failback: from the plan in force
    p.replan_started(0.5)
    p.planned({"s": 10.0}, outage_over=False)
    assert p.decide(0.6, {}).reconcile == {"h:2"}
    assert p.decide(0.7, {}).reconcile == frozenset()
    # A second server down in the same outage: the plan to go back to stays the first.
    p.health_changed([("h:1", "down")], elsewhere)
    assert p.decide(1.0, {}).replan == Replan("failover: server h:1 down", "failover")
    p.replan_started(1.0)
    p.planned({"s": 10.0}, outage_over=False)
    p.health_changed([("h:0", "up"), ("h:1", "up")], later)
    d = p.decide(1.1, {})
    assert d.replan == Replan("failback: server h:0, h:1 back", "failback", failback=True)
    assert p.base(d.replan, later) is home
    p.replan_started(1.1)
    p.planned({"s": 10.0}, outage_over=True)  # no server down: the outage is over
    assert p.restore is None and p.base(d.replan, later) is later


def test_health_changes_before_a_replan_add_up_and_the_first_names_the_kind() -> None:
    p = _planned_at(0.0)
    p.health_changed([("a", "up")], _plan("g0"))
    p.health_changed([("b", "down"), ("c", "up")], _plan("g0"))
    d = p.decide(0.1, {})
    assert d.replan == Replan(
        "failback: server a back; failover: server b down; failback: server c back",
        "failback",
        failback=True,
    )


def test_the_fleet_as_first_probed_is_no_failover() -> None:
    p = EpochPolicy(CONFIG)
    p.health_changed([("a", "down")], None)
    p.health_known()
    assert not p.urgent and p.restore is None
    assert p.decide(0.0, {}).replan == Replan("epoch", "epoch")  # never planned: due


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.01, max_value=40.0),
            st.sampled_from(["sessions", "rate", "down", "up", "none"]),
        ),
        max_size=30,
    )
)
def test_driven_at_its_wake_times_it_keeps_the_min_interval_and_the_epoch(events) -> None:
    """A driver that calls `decide` at every wake time (or sooner, on an event) never sees
    two re-plans closer than the min interval unless fleet health changed, and never goes
    an epoch without one."""
    p = EpochPolicy(CONFIG)
    last, rate, wake, at = -math.inf, 10.0, 0.0, 0.0
    timeline = []
    for gap, what in events:
        at += gap
        timeline.append((at, what))
    for at, what in [*timeline, (200.0, "end")]:
        while wake <= at:  # every wake time up to the next event
            d = p.decide(wake, {"s": rate})
            if d.replan is not None:
                assert wake - last >= CONFIG.min_interval_s
                p.replan_started(wake)
                p.planned({"s": rate}, outage_over=True)
                last = wake
            assert d.wake_at > wake and wake - last < CONFIG.epoch_s
            wake = d.wake_at
        if what == "sessions":
            p.sessions_changed()
        elif what == "rate":
            rate *= 2.0
        elif what in ("down", "up"):
            p.health_changed([("h", what)], None)  # type: ignore[list-item]
            d = p.decide(at, {"s": rate})  # the driver is woken at once
            assert d.replan is not None
            assert d.replan.label == ("failover" if what == "down" else "failback")
            p.replan_started(at)
            p.planned({"s": rate}, outage_over=True)
            last = at


def test_planning_rates_allocated_rates_and_the_plan_with_nothing_up() -> None:
    sessions = [
        Session(id="a", model="m", slo_ms=50, rate=7),
        Session(id="b", model="m", slo_ms=50, rate=3),
        Session(id="idle", model="n", slo_ms=50, rate=0),
    ]
    assert epoch.planning_rates(sessions, {}) == {"a": 7, "b": 3, "idle": 0}
    assert epoch.planning_rates(sessions, {"a": 12.5, "b": 0.0}) == {
        "a": 12.5,
        "b": epoch.MIN_RATE,
        "idle": 0,
    }
    two = Plan(gpus=_plan("g0", "a", 4.0).gpus + _plan("g1", "a", 6.0).gpus)
    assert epoch.allocated_rates(two) == {"a": 10.0} and epoch.allocated_rates(None) == {}
    empty = epoch.nothing_up(sessions, ["h:0"])
    assert empty.gpus == [] and [u.session for u in empty.unplaced] == ["a", "b"]
    assert all(u.reason == "no live server (down: h:0)" for u in empty.unplaced)
