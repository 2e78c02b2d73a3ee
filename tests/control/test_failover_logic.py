"""The control plane's driver on a manual clock, with probe answers and actuation faked: failover
and failback, router reports, epochs (real planning; tests/bench/test_chaos.py runs them on real
servers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from control.actuator import ApplyResult
from control.clock import ManualClock
from control.service import ControlConfig, ControlPlane
from control.store import Store
from control.types import Plan, Session
from model_repo_tools.fleet import Fleet, FleetGpu
from model_repo_tools.profiles import ProfileSet


class FakeProber:
    def __init__(self) -> None:
        self.down: set[str] = set()
        self.calls = 0

    async def live(self, gpu: FleetGpu) -> tuple[bool, str]:
        self.calls += 1
        return (gpu.server not in self.down, "connection refused")

    async def close(self) -> None:
        pass


class FakeActuator:
    """Records which GPUs each apply was allowed to touch."""

    def __init__(self) -> None:
        self.applied: list[tuple[Plan, set[str]]] = []

    def apply(self, plan: Plan, current=None, gpus=None) -> ApplyResult:
        self.applied.append((plan, set(gpus or ())))
        return ApplyResult(plan=plan)

    def unload(self, pairs):
        return pairs


def _fleet(n: int) -> Fleet:
    return Fleet(
        gpus=[
            FleetGpu(id=f"triton-{i}/0", gpu_type="cpu", memory_bytes=2**34, server=f"h:{i}")
            for i in range(n)
        ]
    )


def _profiles() -> ProfileSet:
    rows = [{"batch": b, "latency_ms": 2.0 + 0.5 * b, "memory_bytes": 1} for b in (1, 2, 4, 8)]
    return ProfileSet.model_validate(
        {"profiles": [{"model": "m", "gpu_type": "cpu", "batches": rows}]}
    )


def _control(
    tmp_path: Path, servers: int, **config: float
) -> tuple[ControlPlane, FakeProber, FakeActuator, ManualClock]:
    """A control plane over `servers` fake servers holding one session, on a manual clock."""
    prober, act, clock = FakeProber(), FakeActuator(), ManualClock()
    cp = ControlPlane(
        _fleet(servers),
        tmp_path,
        _profiles(),
        Store(":memory:"),
        config=ControlConfig(**config),  # type: ignore[arg-type]
        actuator=act,  # type: ignore[arg-type]
        prober=prober,  # type: ignore[arg-type]
        clock=clock,
    )
    cp.store.put_session(Session(id="s", model="m", slo_ms=100, rate=50))
    return cp, prober, act, clock


async def _settled(done: Callable[[], bool]) -> None:
    """Wait (real time, briefly) for what the clock woke to finish: planning and actuation
    run in worker threads, which a manual clock does not wait for."""
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not settled within 5 s")


def _used(cp: ControlPlane) -> set[str]:
    assert cp.current is not None
    return {g.gpu for g in cp.current.plan.gpus}


def test_failover_moves_sessions_off_a_dead_server_and_failback_restores(tmp_path: Path) -> None:
    async def scenario() -> None:
        cp, prober, act, _ = _control(tmp_path, 3, probe_s=3600, rejoin_probes=2)
        await cp.start()
        try:
            [home] = _used(cp)
            server = cp.fleet.by_id()[home].server
            prober.down.add(server)
            assert await cp.probe_fleet() == [(server, "down")]
            await cp.tick()  # woken at once: no epoch, no min interval
            assert home not in _used(cp) and _used(cp)
            assert home not in act.applied[-1][1]  # nothing asked of the dead server
            assert cp.current is not None and cp.current.reason.startswith("failover")
            # Back: it must answer twice in a row before it is planned again.
            prober.down.clear()
            assert await cp.probe_fleet() == []
            assert await cp.probe_fleet() == [(server, "up")]
            await cp.tick()
            assert _used(cp) == {home}  # the sessions went back where they were
            assert cp.current.reason.startswith("failback")
        finally:
            await cp.stop()

    asyncio.run(scenario())


def test_a_router_report_probes_at_once_and_all_servers_down_unplaces(tmp_path: Path) -> None:
    async def scenario() -> None:
        cp, prober, _, _ = _control(tmp_path, 1, probe_s=3600)
        await cp.start()
        try:
            prober.down.add("h:0")
            calls = prober.calls
            assert cp.report("triton-0/0", healthy=False, error="connection refused") is True
            await asyncio.sleep(0.01)
            assert prober.calls == calls + 1 and not cp.health.is_up("h:0")
            await cp.tick()
            assert cp.current is not None and cp.current.plan.gpus == []
            [u] = cp.current.plan.unplaced
            assert u.session == "s" and "no live server" in u.reason and u.model == "m"
            assert cp.report("triton-0/0", healthy=True) is False  # healthy reports do nothing
        finally:
            await cp.stop()

    asyncio.run(scenario())


def test_epochs_probes_and_failover_run_on_the_manual_clock(tmp_path: Path) -> None:
    """The service's own loops, driven by the clock: no real time passes."""

    async def scenario() -> None:
        cp, prober, act, clock = _control(tmp_path, 2, epoch_s=30, probe_s=0.5, rejoin_probes=2)
        await cp.start()
        try:
            assert cp.current is not None and cp.current.revision == 1
            [home] = _used(cp)
            applies = len(act.applied)
            await clock.advance(29.0)
            assert len(act.applied) == applies  # nothing before the epoch
            await clock.advance(1.0)
            # The epoch: the same plan, so no new revision, but the fleet is reconciled.
            await _settled(lambda: len(act.applied) == applies + 1)
            assert cp.current.revision == 1
            assert cp.current.applied_at == 1.0e9  # the clock's wall time at start
            # A server down is seen at the next probe and re-planned away at once.
            prober.down.add(cp.fleet.by_id()[home].server)
            await clock.advance(0.5)
            await _settled(lambda: cp.current is not None and cp.current.revision == 2)
            assert cp.current.revision == 2 and cp.current.reason.startswith("failover")
            assert home not in _used(cp) and cp.current.applied_at == 1.0e9 + 30.5
            assert cp.health.snapshot(clock.now())[0]["for_s"] == 0.0
            # Back after two healthy probes, and the sessions go back home.
            prober.down.clear()
            await clock.advance(1.0)
            await _settled(lambda: cp.current is not None and cp.current.revision == 3)
            assert cp.current.revision == 3 and cp.current.reason.startswith("failback")
            assert _used(cp) == {home}
        finally:
            await cp.stop()

    asyncio.run(scenario())


def test_a_reported_server_that_still_answers_is_reconciled_at_once(tmp_path: Path) -> None:
    """A failed batch on a server that answers live: it may have restarted between two probes
    and lost its models, so the plan's models are checked there now, not at the epoch."""

    async def scenario() -> None:
        cp, _, act, _ = _control(tmp_path, 2, probe_s=3600)
        await cp.start()
        try:
            applies, revision = len(act.applied), cp.current and cp.current.revision
            assert cp.report("triton-1/0", healthy=False, error="batch failed") is True
            await _settled(lambda: len(act.applied) == applies + 1)
            assert act.applied[-1][1] == {"triton-1/0"}  # only that server's GPUs
            assert cp.health.is_up("h:1") and cp.current and cp.current.revision == revision
        finally:
            await cp.stop()

    asyncio.run(scenario())
