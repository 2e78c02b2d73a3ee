"""router.policy with a manual clock: every event is called with an explicit `now`."""

from __future__ import annotations

import math

import pytest

from router.policy import BatchPolicy
from router.queues import EdfQueue
from router.testing import (
    curves,
    dispatches,
    drops,
    drops_by_reason,
    ids,
    one_gpu_policy,
    plan,
    wakes,
)
from router.types import Request
from tnx.errors import UserInputError


def _fill(p: BatchPolicy, n: int, start: int = 0, at: float = 0.0, session: str = "s") -> list:
    out = []
    for i in range(start, start + n):
        out += p.arrival(at, p.request(i, session, at))
    return out


# ---- queue ---------------------------------------------------------------------------


def test_edf_queue_orders_by_deadline_then_arrival() -> None:
    q = EdfQueue()
    for i, d in enumerate([10.0, 20.0, 5.0, 20.0, 15.0]):
        q.push(Request(i, "s", 0.0, d))
    assert [r.id for r in q] == [2, 0, 4, 1, 3]
    assert q.window(3) == (3, 3)
    assert [r.id for r in q.take(2)] == [2, 0]
    assert q.pop().id == 4
    assert [r.id for r in q.drain()] == [1, 3]
    assert not q and q.samples == 0


def test_edf_queue_window_counts_samples() -> None:
    q = EdfQueue()
    for i, n in enumerate([2, 1, 3, 1]):
        q.push(Request(i, "s", 0.0, float(i), n_samples=n))
    assert q.window(4) == (2, 3)  # 2+1 fit, the 3 would overflow
    assert q.window(1) == (1, 2)  # the head alone, even when larger than the window
    assert q.samples == 7


# ---- sliding window --------------------------------------------------------------------


def test_idle_gpu_dispatches_at_once() -> None:
    p = one_gpu_policy()
    acts = p.arrival(0.0, p.request(0, "s", 0.0))
    (d,) = dispatches(acts)
    assert (d.gpu, d.session, d.model, ids(d), d.n_samples, d.expected_ms) == (
        "g0",
        "s",
        "m",
        [0],
        1,
        5.0,
    )


def test_one_batch_in_flight_and_at_most_the_planned_batch() -> None:
    p = one_gpu_policy(batch=4)
    acts = _fill(p, 7)
    assert [ids(d) for d in dispatches(acts)] == [[0]]  # the rest waits for the GPU
    acts = p.batch_done(5.0, "g0", 0)
    assert [ids(d) for d in dispatches(acts)] == [[1, 2, 3, 4]]
    acts = p.batch_done(13.0, "g0", 1)
    (d,) = dispatches(acts)
    assert ids(d) == [5, 6] and d.expected_ms == pytest.approx(5 + 3 * 1 / 3)  # window shrank


def test_samples_count_toward_the_batch() -> None:
    p = one_gpu_policy(batch=4)
    p.arrival(0.0, p.request("busy", "s", 0.0))
    for i, n in enumerate([3, 2, 1]):
        p.arrival(0.0, p.request(i, "s", 0.0, n_samples=n))
    (d,) = dispatches(p.batch_done(5.0, "g0", 0))
    assert ids(d) == [0] and d.n_samples == 3  # 3 + 2 would be 5 > 4


def test_sliding_window_drops_head_that_cannot_finish_with_the_window() -> None:
    # l(1)=5, l(4)=8. Head deadline 12: alone it fits from t=5 (10), in a window of 4 it
    # does not (13): Nexus drops it and slides rather than shrink the batch.
    p = one_gpu_policy(batch=4, slo=50.0)
    p.arrival(0.0, p.request("busy", "s", 0.0))
    p.arrival(1.0, Request("tight", "s", 1.0, 12.0))
    for i in range(4):
        p.arrival(2.0, p.request(i, "s", 2.0))
    acts = p.batch_done(5.0, "g0", 0)
    assert [(d.request.id, d.reason) for d in drops(acts)] == [("tight", "deadline")]
    assert ids(dispatches(acts)[0]) == [0, 1, 2, 3]


def test_short_queue_shrinks_the_window_and_saves_the_head() -> None:
    p = one_gpu_policy(batch=4)
    p.arrival(0.0, p.request("busy", "s", 0.0))
    p.arrival(1.0, Request("tight", "s", 1.0, 12.0))
    acts = p.batch_done(5.0, "g0", 0)
    assert not drops(acts)
    assert ids(dispatches(acts)[0]) == ["tight"]  # window 1: 5 + 5 <= 12


def test_timer_drops_a_doomed_head_at_once() -> None:
    p = one_gpu_policy(batch=4, slo=20.0)
    p.arrival(0.0, p.request("busy", "s", 0.0))
    acts = p.arrival(1.0, p.request("w", "s", 1.0))
    assert wakes(acts) == [16.0]  # deadline 21 - l(1) 5
    assert not drops(p.timer(15.9))
    acts = p.timer(16.0)
    assert [(d.request.id, d.reason) for d in drops(acts)] == [("w", "deadline")]
    assert p.queued() == 0


def test_arrival_that_cannot_make_it_even_alone_is_dropped() -> None:
    p = one_gpu_policy(slo=4.0)  # l(1) = 5 > SLO
    acts = p.arrival(0.0, p.request(0, "s", 0.0))
    assert drops_by_reason(acts) == {"deadline": 1}


@pytest.mark.parametrize(
    ("mode", "dropped"),
    [("early", {"deadline": 1}), ("lazy", {"expired": 1}), ("none", {})],
)
def test_drop_modes(mode: str, dropped: dict[str, int]) -> None:
    p = one_gpu_policy(batch=4, slo=20.0, drop=mode)  # type: ignore[arg-type]
    p.arrival(0.0, p.request("busy", "s", 0.0))
    p.arrival(1.0, p.request("w", "s", 1.0))  # deadline 21
    acts = []
    for t in (10.0, 16.0, 18.0, 21.0):
        acts += p.timer(t)
    acts += p.batch_done(25.0, "g0", 0)
    assert drops_by_reason(acts) == dropped
    if mode == "none":
        assert ids(dispatches(acts)[0]) == ["w"]  # served, late
    else:
        assert not dispatches(acts) and p.queued() == 0


def test_lazy_dispatches_what_will_be_late_but_has_not_expired() -> None:
    p = one_gpu_policy(batch=4, slo=20.0, drop="lazy")
    p.arrival(0.0, p.request("busy", "s", 0.0))
    p.arrival(1.0, p.request("w", "s", 1.0))  # deadline 21
    acts = p.batch_done(19.0, "g0", 0)  # 19 + 5 > 21, still sent
    assert ids(dispatches(acts)[0]) == ["w"]


# ---- round robin and duty cycle ------------------------------------------------------


def _two_sessions() -> BatchPolicy:
    return BatchPolicy(plan(("g0", 40.0, [("a", "m", 2, 100.0), ("b", "m", 2, 100.0)])), curves())


def test_round_robin_over_sessions() -> None:
    p = _two_sessions()
    p.arrival(0.0, p.request("a0", "a", 0.0))  # dispatched at once
    for i in range(1, 5):
        p.arrival(0.0, p.request(f"a{i}", "a", 0.0))
        p.arrival(0.0, p.request(f"b{i}", "b", 0.0))
    order, now, bid = [], 5.0, 0
    while True:
        ds = dispatches(p.batch_done(now, "g0", bid))
        if not ds:
            break
        order.append(ds[0].session)
        bid, now = ds[0].batch_id, now + ds[0].expected_ms
    assert order == ["b", "a", "b", "a"]


def test_work_conserving_when_other_sessions_are_idle() -> None:
    p = _two_sessions()
    _fill(p, 7, session="a")
    sessions, now, bid = [], 5.0, 0
    while ds := dispatches(p.batch_done(now, "g0", bid)):
        sessions.append(ds[0].session)
        bid, now = ds[0].batch_id, now + 1.0  # well inside one 40 ms duty cycle
    assert sessions == ["a", "a", "a"]


def test_duty_cycle_serves_unserved_sessions_first() -> None:
    p = BatchPolicy(
        plan(("g0", 100.0, [("a", "m", 1, 500.0), ("b", "m", 1, 500.0), ("c", "m", 1, 500.0)])),
        curves(),
    )
    p.arrival(0.0, p.request("a0", "a", 0.0))  # a served in this cycle, rr -> b
    p.arrival(0.0, p.request("c0", "c", 0.0))
    p.arrival(0.0, p.request("a1", "a", 0.0))
    (d,) = dispatches(p.batch_done(5.0, "g0", 0))
    assert d.session == "c"  # b is empty, a already had its slot: c before a
    (d,) = dispatches(p.batch_done(10.0, "g0", d.batch_id))
    assert d.session == "a"  # work-conserving: a again within the same cycle


# ---- online latency correction ---------------------------------------------------------


def test_observed_batch_times_correct_the_estimate() -> None:
    p = one_gpu_policy(batch=4, slo=30.0)
    p.arrival(0.0, p.request(0, "s", 0.0))
    acts = p.batch_done(10.0, "g0", 0)  # l(1) profiled 5, observed 10
    assert not acts
    c = p.latency.correction("g0", "m", 10.0)
    # One batch size seen: the 5 ms difference is read as fixed overhead, not as a scale.
    assert (c.scale, c.overhead_ms, c.sigma_ms, c.weight) == pytest.approx((1.0, 5.0, 0.0, 1.0))
    # Now a lone request needs 10 ms: SLO 30 still fits, but a deadline 9 ms away does not.
    assert drops_by_reason(p.arrival(20.0, Request("x", "s", 20.0, 29.0))) == {"deadline": 1}
    (d,) = dispatches(p.arrival(20.0, Request("y", "s", 20.0, 31.0)))
    # The correction fades with the age of its evidence (10 ms of the 2 s decay here).
    assert d.expected_ms == pytest.approx(5.0 + 5.0 * math.exp(-10.0 / 2000.0))


def test_lockout_is_impossible_a_hopeless_session_still_probes() -> None:
    p = one_gpu_policy(batch=4, slo=30.0)
    p.arrival(0.0, p.request(0, "s", 0.0))
    p.batch_done(100.0, "g0", 0)  # observed 100 ms for a profiled 5: nothing fits a 30 ms SLO
    assert drops_by_reason(p.arrival(101.0, p.request(1, "s", 101.0))) == {"deadline": 1}
    assert p.admit(101.0, "s", 131.0) == "deadline"
    assert p.admit(300.0, "s", 330.0) is None  # a probe is due: the door lets it in
    # A probe is due once probe_ms has passed since the last dispatch: it goes out anyway...
    (probe,) = dispatches(p.arrival(300.0, p.request(2, "s", 300.0)))
    assert ids(probe) == [2]
    # ...and when it comes back fast, the model believes it at once.
    p.batch_done(305.0, "g0", probe.batch_id)
    (d,) = dispatches(p.arrival(306.0, p.request(3, "s", 306.0)))
    assert d.expected_ms == pytest.approx(5.0)


def test_a_request_the_queue_ahead_would_make_late_is_refused_at_the_door() -> None:
    p = one_gpu_policy(batch=4, slo=50.0)  # l(4) = 8 ms: the queue drains 0.5 samples/ms
    assert p.admit(0.0, "s", 50.0) is None
    _fill(p, 1 + 21)  # one in flight, 21 queued: 21 / 0.5 + l(4) = 50 ms, just in time
    assert p.admit(0.0, "s", 50.0) is None
    assert drops_by_reason(p.arrival(0.0, p.request(22, "s", 0.0))) == {}
    # 22 queued now: the next one would be answered at 52 ms, past its 50 ms deadline.
    assert p.admit(0.0, "s", 50.0) == "deadline"
    assert drops_by_reason(p.arrival(0.0, p.request(23, "s", 0.0))) == {"deadline": 1}
    assert p.admit(0.0, "nope", 50.0) == "no_session"


def test_at_the_door_a_neighbour_s_turn_is_the_batch_it_would_take_now() -> None:
    """A GPU's round is the session's planned batch and, of each other session with work,
    what its queue holds up to its planned batch: one request queued there is a turn of
    l(1) = 5 ms, not l(4) = 8 ms (which refused part of every burst)."""
    p = BatchPolicy(plan(("g0", 40.0, [("s", "m", 4, 50.0), ("o", "m", 4, 50.0)])), curves())
    _fill(p, 1 + 12)  # one in flight, 12 queued
    _fill(p, 1, start=100, session="o")
    # 12 / (4 / (8 + 5)) + l(4) = 47 ms: in time (a full turn for o would make it 56).
    assert p.admit(0.0, "s", 50.0) is None
    _fill(p, 3, start=101, session="o")  # o holds its planned batch: 12 / (4 / 16) + 8 = 56
    assert p.admit(0.0, "s", 50.0) == "deadline"


def test_door_refusal_is_only_for_early_drop() -> None:
    for mode in ("lazy", "none"):
        p = one_gpu_policy(batch=4, slo=50.0, drop=mode)  # type: ignore[arg-type]
        _fill(p, 40)
        assert p.admit(0.0, "s", 50.0) is None


# ---- failures ----------------------------------------------------------------------------


def _shared_session() -> BatchPolicy:
    return BatchPolicy(
        plan(("g0", 20.0, [("s", "m", 4, 50.0)]), ("g1", 20.0, [("s", "m", 4, 50.0)])),
        curves(),
    )


def test_failed_batch_rehomes_to_another_gpu_of_the_session() -> None:
    p = _shared_session()
    (d0,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    (d1,) = dispatches(p.arrival(0.0, p.request(1, "s", 0.0)))
    assert (d0.gpu, d1.gpu) == ("g0", "g1")
    _fill(p, 2, start=2, at=1.0)  # queued, both GPUs busy
    acts = p.batch_done(6.0, "g0", d0.batch_id, "failed")
    assert not p.is_up("g0") and not drops(acts) and not dispatches(acts)
    (d,) = dispatches(p.batch_done(6.0, "g1", d1.batch_id))
    assert d.gpu == "g1" and sorted(ids(d)) == [0, 2, 3]  # the failed one joins, EDF first
    assert ids(d)[0] == 0


def test_a_request_failed_once_is_served_by_the_other_gpu() -> None:
    p = _shared_session()
    (d0,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    assert d0.gpu == "g0"
    acts = p.batch_done(6.0, "g0", d0.batch_id, "failed")
    (d,) = dispatches(acts)  # g1 is idle: the retry goes out at once
    assert (d.gpu, ids(d)) == ("g1", [0]) and d.requests[0].attempts == 1
    assert not drops(acts) and p.batch_done(11.0, "g1", d.batch_id) == []


def test_a_request_failed_twice_is_dropped_server_down() -> None:
    three = [("s", "m", 4, 50.0)]
    p = BatchPolicy(plan(("g0", 20.0, three), ("g1", 20.0, three), ("g2", 20.0, three)), curves())
    (d0,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    (d1,) = dispatches(p.batch_done(6.0, "g0", d0.batch_id, "failed"))
    assert d1.gpu == "g1"
    acts = p.batch_done(12.0, "g1", d1.batch_id, "failed")
    # g2 is up, idle and could still finish it by its deadline: not a third time.
    assert p.is_up("g2") and not dispatches(acts)
    assert [(x.request.id, x.reason) for x in drops(acts)] == [(0, "server_down")]
    # A fresh request still gets its one retry.
    (d2,) = dispatches(p.arrival(13.0, p.request(1, "s", 13.0)))
    assert d2.gpu == "g2" and d2.requests[0].attempts == 0


def test_failed_batch_with_no_time_left_is_dropped_server_down() -> None:
    p = _shared_session()
    (d0,) = dispatches(p.arrival(0.0, Request(0, "s", 0.0, 12.0)))
    acts = p.batch_done(8.0, "g0", d0.batch_id, "failed")  # 8 + l(1)=5 > 12
    assert drops_by_reason(acts) == {"server_down": 1}


def test_gpu_down_drops_queue_and_refuses_arrivals_then_comes_back() -> None:
    p = one_gpu_policy()
    (d,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    _fill(p, 3, start=1)
    acts = p.mark_down(1.0, "g0")
    assert drops_by_reason(acts) == {"server_down": 3}
    assert drops_by_reason(p.arrival(2.0, p.request(9, "s", 2.0))) == {"no_server": 1}
    assert p.batch_done(5.0, "g0", d.batch_id) == []  # the batch in flight still counts
    acts = p.mark_up(6.0, "g0")
    assert acts == []
    assert dispatches(p.arrival(7.0, p.request(10, "s", 7.0)))


def test_mark_up_while_batch_in_flight_keeps_one_batch_per_gpu() -> None:
    p = one_gpu_policy()
    (d,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    p.mark_down(1.0, "g0")
    p.mark_up(2.0, "g0")
    assert not dispatches(p.arrival(3.0, p.request(1, "s", 3.0)))
    assert ids(dispatches(p.batch_done(5.0, "g0", d.batch_id))[0]) == [1]


def test_rejected_batch_drops_its_requests_and_keeps_the_gpu() -> None:
    p = one_gpu_policy()
    (d,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    assert drops_by_reason(p.batch_done(1.0, "g0", d.batch_id, "rejected")) == {"rejected": 1}
    assert p.is_up("g0")


def test_duplicate_batch_done_is_ignored() -> None:
    p = one_gpu_policy()
    (d,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    p.batch_done(5.0, "g0", d.batch_id)
    assert p.batch_done(5.0, "g0", d.batch_id) == []


# ---- plan switch -------------------------------------------------------------------------


def test_plan_switch_keeps_queues_and_rehomes_orphans() -> None:
    p = BatchPolicy(
        plan(
            ("g0", 20.0, [("s", "m", 4, 50.0), ("old", "m", 4, 60.0)]),
            ("g1", 20.0, [("gone", "n", 4, 50.0)]),
        ),
        curves(m={1: 5.0, 8: 12.0}, n={1: 5.0, 8: 12.0}),
    )
    (busy,) = dispatches(p.arrival(0.0, p.request("busy", "s", 0.0)))
    (busy1,) = dispatches(p.arrival(0.0, p.request("busy1", "gone", 0.0)))
    _fill(p, 2, start=0)
    _fill(p, 2, start=10, session="old")
    _fill(p, 2, start=20, session="gone")
    new = plan(("g0", 20.0, [("s", "m", 4, 50.0)]), ("g2", 20.0, [("s2", "m", 4, 100.0)]))
    acts = p.switch_plan(1.0, new)
    assert drops_by_reason(acts) == {"no_session": 2}  # model n left the plan
    assert {d.request.id for d in drops(acts)} == {20, 21}
    # "old" requests moved to the same-model session nearest in SLO (s, 50 ms, not s2,
    # 100 ms), behind s's own, in deadline order; nothing lost or duplicated.
    assert not dispatches(acts) and p.queued("s") == 4
    (d,) = dispatches(p.batch_done(5.0, "g0", busy.batch_id))
    assert ids(d) == [0, 1, 10, 11]
    assert p.batch_done(6.0, "g1", busy1.batch_id) == []  # g1 left; its batch still settles


def test_plan_switch_with_bad_plan_changes_nothing() -> None:
    p = one_gpu_policy()
    _fill(p, 3)
    with pytest.raises(UserInputError, match="no x on t"):
        p.switch_plan(1.0, plan(("g0", 20.0, [("s", "x", 4, 50.0)])))
    assert p.queued("s") == 2 and p.sessions() == {"s": "m"}


def test_plan_validation_names_the_problem() -> None:
    with pytest.raises(UserInputError, match="batch 16 is above the profiled 8"):
        BatchPolicy(plan(("g0", 20.0, [("s", "m", 16, 50.0)])), curves())
    with pytest.raises(UserInputError, match="session s is m on one gpu, n on g1"):
        BatchPolicy(
            plan(("g0", 20.0, [("s", "m", 4, 50.0)]), ("g1", 20.0, [("s", "n", 4, 50.0)])),
            curves(m={1: 1.0, 8: 2.0}, n={1: 1.0, 8: 2.0}),
        )


# ---- edges and shutdown ------------------------------------------------------------------


def test_unknown_session_and_oversized_requests() -> None:
    p = one_gpu_policy()
    assert drops_by_reason(p.arrival(0.0, p.request(0, "nope", 0.0))) == {"no_session": 1}
    assert drops_by_reason(p.arrival(0.0, p.request(1, "s", 0.0, n_samples=9))) == {"too_large": 1}
    # Larger than the planned batch but within the profile: served alone, never split.
    (d,) = dispatches(p.arrival(0.0, p.request(2, "s", 0.0, n_samples=6)))
    assert d.n_samples == 6


def test_shutdown_drops_queue_and_refuses_new_work() -> None:
    p = _shared_session()
    (d0,) = dispatches(p.arrival(0.0, p.request(0, "s", 0.0)))
    (d1,) = dispatches(p.arrival(0.0, p.request(1, "s", 0.0)))
    _fill(p, 3, start=2)
    acts = p.shutdown(1.0)
    assert drops_by_reason(acts) == {"shutting_down": 3}
    assert drops_by_reason(p.arrival(2.0, p.request(9, "s", 2.0))) == {"shutting_down": 1}
    assert p.batch_done(5.0, "g0", d0.batch_id) == []  # a finished batch is still answered
    assert drops_by_reason(p.batch_done(5.0, "g1", d1.batch_id, "failed")) == {"shutting_down": 1}
