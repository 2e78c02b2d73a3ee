"""Fleet health as pure logic: down at once, back after healthy probes, flapping damped."""

from __future__ import annotations

from control.health import FleetHealth


def test_down_at_first_failure_and_back_after_three_healthy_probes() -> None:
    h = FleetHealth(["a", "b"], rejoin_probes=3)
    assert h.observe(0.0, "a", True) is None
    assert h.observe(0.5, "a", False, "connection refused") == "down"
    assert h.down() == ["a"] and not h.is_up("a") and h.is_up("b")
    assert h.observe(1.0, "a", False) is None  # already down: no second transition
    assert h.observe(1.5, "a", True) is None
    assert h.observe(2.0, "a", True) is None
    assert h.observe(2.5, "a", True) == "up"
    assert h.down() == []


def test_a_failure_restarts_the_healthy_streak() -> None:
    h = FleetHealth(["a"], rejoin_probes=3)
    h.observe(0.0, "a", False)
    h.observe(0.5, "a", True)
    h.observe(1.0, "a", True)
    h.observe(1.5, "a", False)
    assert [h.observe(2.0 + i / 2, "a", True) for i in range(3)] == [None, None, "up"]


def test_flapping_server_needs_twice_as_many_probes_each_time() -> None:
    h = FleetHealth(["a"], rejoin_probes=2, flap_window_s=60.0, max_rejoin_probes=8)
    now = 0.0
    needed = []
    for _ in range(5):
        assert h.observe(now, "a", False) == "down"
        n = 0
        while True:
            now += 0.5
            n += 1
            if h.observe(now, "a", True) == "up":
                break
        needed.append(n)
    assert needed == [2, 4, 8, 8, 8]  # doubled per recent failure, capped
    # Failures older than the window are forgotten.
    now += 61.0
    h.observe(now, "a", False)
    assert h.required("a", now) == 2


def test_router_reports_ask_for_one_probe_at_a_time() -> None:
    h = FleetHealth(["a"])
    assert h.suspect("a") is True
    assert h.suspect("a") is False  # a probe is already pending
    assert h.is_up("a")  # a report alone takes nothing out
    h.observe(0.0, "a", True)
    assert h.suspect("a") is True
    assert h.suspect("unknown") is False


def test_snapshot_says_why_and_what_it_needs() -> None:
    h = FleetHealth(["a", "b"], rejoin_probes=3)
    h.observe(1.0, "a", False, "timed out")
    h.observe(2.0, "a", True)
    rows = {r["server"]: r for r in h.snapshot(3.0)}
    assert rows["a"]["up"] is False and rows["a"]["error"] == "timed out"
    assert rows["a"]["healthy_probes"] == 1 and rows["a"]["needs"] == 3
    assert rows["a"]["for_s"] == 2.0
    assert rows["b"]["up"] is True and "error" not in rows["b"]
