"""A router's share of a plan (router.ownership): its own GPUs, and where the rest go."""

from __future__ import annotations

from collections import Counter

from control.types import Plan
from router.ownership import Share

A, B, C = "http://a:1", "http://b:2", "http://c:3"


def _plan(gpus: dict[str, tuple[str | None, list[tuple[str, float]]]]) -> Plan:
    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": g,
                    "gpu_type": "cpu",
                    "duty_cycle_ms": 50.0,
                    "owner": owner,
                    "allocations": [
                        {"session": s, "model": "m", "batch": 4, "rate": r, "slo_ms": 200}
                        for s, r in allocs
                    ],
                }
                for g, (owner, allocs) in gpus.items()
            ]
        }
    )


def test_no_owners_or_no_name_keeps_every_gpu() -> None:
    plan = _plan({"g0": (None, [("s", 10.0)]), "g1": (None, [("t", 10.0)])})
    assert Share.of(plan, A).local == plan and Share.of(plan, A).target("t", 0.0) is None
    owned = _plan({"g0": (A, [("s", 10.0)]), "g1": (B, [("t", 10.0)])})
    assert Share.of(owned, None).local == owned


def test_own_gpus_only_and_sessions_elsewhere_forwarded_by_planned_rate() -> None:
    plan = _plan(
        {
            "g0": (A, [("s", 10.0), ("u", 5.0)]),
            "g1": (B, [("t", 30.0), ("u", 5.0)]),
            "g2": (C, [("t", 10.0)]),
        }
    )
    share = Share.of(plan, A + "/")
    assert [g.gpu for g in share.local.gpus] == ["g0"]
    assert share.owners == {"g0": A, "g1": B, "g2": C}
    assert share.target("s", 0.0) is None and share.target("u", 0.0) is None  # served here
    assert share.target("unknown", 0.0) is None
    assert share.here == {"s", "u"}
    picks = Counter(share.target("t", 0.0) for _ in range(4000))
    assert set(picks) == {B, C} and 0.68 < picks[B] / 4000 < 0.82  # 30:10
    assert Share.of(plan, B).target("s", 0.0) == A


def test_a_split_session_is_served_here_up_to_its_local_rate_the_rest_forwarded() -> None:
    plan = _plan({"g0": (A, [("s", 30.0)]), "g1": (B, [("s", 90.0)])})
    share = Share.of(plan, A)
    assert share.local_rate == {"s": 30.0}
    # 20 req/s for 3 s: under the 30 planned here, all served here.
    assert all(share.target("s", t * 50.0) is None for t in range(60))
    # Then 60 req/s for 5 s: about half (30 of 60) goes to B.
    picks = [share.target("s", 3000.0 + t * 1000.0 / 60) for t in range(300)]
    sent = picks[60:].count(B) / 240  # after the first second at the new rate
    assert set(picks) == {None, B} and 0.4 < sent < 0.6


def test_session_rows_keep_counting_sessions_whose_gpus_moved_away() -> None:
    from router.routing import SessionTable, session_rows

    plan = _plan({"g0": (A, [("s", 10.0)]), "g1": (B, [("t", 10.0)])})
    local = {"s": "m"}
    rows = session_rows(
        local, lambda sid: 200.0, lambda sid: 2, {"s": 5, "t": 7, "gone": 3}, SessionTable(plan)
    )
    assert rows == [
        {"id": "s", "model": "m", "slo_ms": 200.0, "arrivals": 5, "queued": 2},
        {"id": "t", "model": "m", "slo_ms": 200.0, "arrivals": 7, "queued": 0},
    ]
