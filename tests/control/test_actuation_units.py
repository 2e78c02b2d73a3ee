"""Pure pieces of the control loop: actuation diffs, effective plans, load retries, rate windows,
the store."""

from __future__ import annotations

from pathlib import Path

from control.actuator import Actuator, Changes, changes, desired_state, effective_plan
from control.rates import RateWindow, out_of_band
from control.store import Store
from control.types import Plan, Session
from model_repo_tools.fleet import Fleet, FleetGpu
from tnx.errors import ServerError


def _plan(*gpus: tuple[str, list[tuple[str, str, int]]]) -> Plan:
    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": g,
                    "gpu_type": "t",
                    "duty_cycle_ms": 50.0,
                    "allocations": [
                        {"session": s, "model": m, "batch": b, "rate": 10.0, "slo_ms": 100.0}
                        for s, m, b in allocs
                    ],
                }
                for g, allocs in gpus
            ]
        }
    )


def test_desired_state_takes_the_largest_batch_per_model() -> None:
    plan = _plan(("g0", [("a", "m", 4), ("b", "m", 8), ("c", "n", 2)]), ("g1", [("a", "m", 2)]))
    assert desired_state(plan) == {"g0": {"m": 8, "n": 2}, "g1": {"m": 2}}


def test_changes_load_what_is_missing_or_too_small_and_unload_the_rest() -> None:
    current = {"g0": {"m": 4, "old": 8}, "g1": {}}
    desired = {"g0": {"m": 8, "n": 2}, "g1": {"m": 2}}
    assert changes(current, desired) == Changes(
        loads=[("g0", "m", 8), ("g0", "n", 2), ("g1", "m", 2)], unloads=[("g0", "old")]
    )
    # Reconciling an unchanged fleet does nothing: a restart reloads nothing.
    assert changes({"g0": {"m": 8, "n": 2}, "g1": {"m": 2}}, desired) == Changes()


def test_effective_plan_lists_failed_loads_as_unplaced() -> None:
    plan = _plan(("g0", [("a", "m", 4)]), ("g1", [("a", "m", 4), ("b", "n", 1)]))
    eff = effective_plan(plan, {("g1", "m"): "boom"})
    assert [(g.gpu, [a.session for a in g.allocations]) for g in eff.gpus] == [
        ("g0", ["a"]),
        ("g1", ["b"]),
    ]
    [u] = eff.unplaced
    assert u.session == "a" and u.rate == 10.0 and "load of m on g1 failed: boom" in u.reason
    assert effective_plan(plan, {}) is plan


def test_rate_window_sums_routers_and_survives_a_counter_reset() -> None:
    w = RateWindow(window_s=4.0)
    assert not w.full(0.0)
    for t in range(6):
        w.add("r1", float(t), {"s": 10.0 * t})
        w.add("r2", float(t), {"s": 5.0 * t, "x": 0.0})
    assert w.full(5.0)
    assert abs(w.rates()["s"] - 15.0) < 1e-9 and w.rates()["x"] == 0.0
    w.add("r1", 6.0, {"s": 3.0})  # r1 restarted: its counter went back to zero
    assert w.rates()["s"] > 0


def test_out_of_band_is_nexus_band_with_a_floor() -> None:
    assert out_of_band(12.0, 10.0) and out_of_band(7.0, 10.0)
    assert not out_of_band(10.9, 10.0) and not out_of_band(8.5, 10.0)
    assert not out_of_band(0.6, 0.5)  # tiny rates do not flap


def test_store_keeps_sessions_and_the_last_plan(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path)
    store.put_session(Session(id="a", model="m", slo_ms=50, rate=3))
    store.put_session(Session(id="b", model="n", slo_ms=80, rate=1))
    assert store.delete_session("b") and not store.delete_session("b")
    store.save_plan(1, _plan(("g0", [("a", "m", 4)])), 1.0)
    store.save_plan(2, _plan(("g1", [("a", "m", 2)])), 2.0)
    store.close()
    again = Store(path)
    assert [s.id for s in again.sessions()] == ["a"]
    revision, plan = again.last_plan()  # type: ignore[misc]
    assert revision == 2 and plan.gpus[0].gpu == "g1"


class _FlakyServer:
    """A TritonServer stand-in whose loads fail `fails` times, then succeed."""

    def __init__(self, fails: int, calls: list[str]) -> None:
        self.fails, self.calls = fails, calls

    def __enter__(self) -> _FlakyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def load(self, model: str, config_json: str) -> None:
        self.calls.append(model)
        if len(self.calls) <= self.fails:
            raise ServerError(f"load {len(self.calls)} refused")

    def is_model_ready(self, model: str) -> bool:
        return True


def _actuator(tmp_path: Path, fails: int, calls: list[str], sleeps: list[float]) -> Actuator:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nmax_batch_size: 8\n')
    fleet = Fleet(gpus=[FleetGpu(id="t-0/0", gpu_type="cpu", memory_bytes=1, server="h:0")])
    return Actuator(
        fleet,
        tmp_path,
        retries=3,
        backoff_s=0.5,
        client=lambda _: _FlakyServer(fails, calls),  # type: ignore[arg-type,return-value]
        sleep=sleeps.append,
    )


def test_a_load_is_retried_with_doubling_backoff(tmp_path: Path, caplog) -> None:
    calls: list[str] = []
    sleeps: list[float] = []
    res = _actuator(tmp_path, 2, calls, sleeps).apply(_plan(("t-0/0", [("a", "m", 4)])), {})
    assert res.loaded == [("t-0/0", "m")] and not res.failed
    assert len(calls) == 3 and sleeps == [0.5, 1.0]
    assert [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()] == [
        "load m on t-0/0 failed (attempt 1): load 1 refused",
        "load m on t-0/0 failed (attempt 2): load 2 refused",
    ]


def test_a_load_that_keeps_failing_raises_its_last_error(tmp_path: Path) -> None:
    calls: list[str] = []
    sleeps: list[float] = []
    res = _actuator(tmp_path, 5, calls, sleeps).apply(_plan(("t-0/0", [("a", "m", 4)])), {})
    assert len(calls) == 3 and res.failed == {("t-0/0", "m"): "load 3 refused"}
    [u] = res.plan.unplaced
    assert "load 3 refused" in u.reason
