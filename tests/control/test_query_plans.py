"""Queries in the control plane: their structure survives a restart, the plan carries their
stages' budgets, and query analysis runs again when the stages' rates change (Nexus §6.2).
On a manual clock with actuation and probes faked (tests/control/test_failover_logic.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from control.clock import ManualClock
from control.epoch import Replan
from control.query_analysis import analyse, need_on
from control.service import ControlConfig, ControlPlane
from control.store import Store
from control.types import Plan, Query, Session, Workload
from model_repo_tools.profiles import ProfileSet
from tests.control.test_failover_logic import FakeActuator, FakeProber, _fleet

QUERY = {
    "id": "q",
    "slo_ms": 200,
    "rate": 40,
    "stages": [
        {"id": "det", "model": "a"},
        {"id": "cls", "model": "b", "after": "det", "fanout": 2},
    ],
}


def _profiles() -> ProfileSet:
    # `a` gains much from batching, `b` little: the split moves with their rates.
    a = [{"batch": b, "latency_ms": 10.0 + 0.5 * b, "memory_bytes": 1} for b in (1, 4, 16, 64)]
    b = [{"batch": b, "latency_ms": 2.0 + 2.0 * b, "memory_bytes": 1} for b in (1, 4, 16, 64)]
    return ProfileSet.model_validate(
        {
            "profiles": [
                {"model": "a", "gpu_type": "cpu", "batches": a},
                {"model": "b", "gpu_type": "cpu", "batches": b},
            ]
        }
    )


def _control(state: Path) -> ControlPlane:
    return ControlPlane(
        _fleet(2),
        state.parent,
        _profiles(),
        Store(state),
        config=ControlConfig(probe_s=3600),
        actuator=FakeActuator(),  # type: ignore[arg-type]
        prober=FakeProber(),  # type: ignore[arg-type]
        clock=ManualClock(),
    )


def _budgets(plan: Plan) -> dict[str, float]:
    [q] = plan.queries
    return {s.session: s.budget_ms for s in q.stages}


def test_the_plan_carries_queries_and_a_restart_keeps_them(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    workload = Workload.model_validate({"queries": [QUERY]})

    async def scenario() -> None:
        cp = _control(state)
        cp.seed(workload)
        await cp.start()
        try:
            assert cp.current is not None
            plan = cp.current.plan
            budgets = _budgets(plan)
            assert set(budgets) == {"q/det", "q/cls"}
            assert sum(budgets.values()) <= 200.0 + 1e-9
            slos = {a.session: a.slo_ms for g in plan.gpus for a in g.allocations}
            assert slos == budgets  # the stage sessions run at their budgets
            [stored] = cp.store.queries.all()
            assert stored == Query.model_validate(QUERY)
            # The plan as routers fetch it, and as an old reader of plan.json reads it.
            body = plan.model_dump(mode="json")
            assert body["queries"][0]["stages"][1]["after"] == "det"
            assert Plan.model_validate(body) == plan
        finally:
            await cp.stop()
        # A restart with a workload that no longer names the query keeps it all the same.
        again = _control(state)
        again.seed(Workload())
        await again.start()
        try:
            assert again.store.queries.all() == [Query.model_validate(QUERY)]
            assert again.current is not None and _budgets(again.current.plan) == budgets
            await again.replan(Replan("sessions changed", "sessions changed"))
            assert again.query_plans and _budgets(again.current.plan) == budgets
        finally:
            await again.stop()

    asyncio.run(scenario())


def test_query_analysis_runs_again_when_the_rates_change(tmp_path: Path) -> None:
    async def scenario() -> None:
        cp = _control(tmp_path / "state.sqlite")
        cp.seed(Workload.model_validate({"queries": [QUERY]}))
        await cp.start()
        try:
            assert cp.current is not None
            before = _budgets(cp.current.plan)
            # Ten times the declared rate at the second stage, nothing more at the first.
            cp.observed_rates = lambda: {"q/det": 40.0, "q/cls": 800.0}  # type: ignore[method-assign]
            record = await cp.replan(Replan("rate of q/cls", "rate of q/cls"))
            assert record is not None
            after = _budgets(record.plan)
            assert after != before and after["q/cls"] > before["q/cls"]
            stored = {s.id: s.slo_ms for s in cp.store.sessions()}
            assert stored == after  # a restart plans with the new budgets
            assert {s.id: s.rate for s in cp.store.sessions()} == {"q/det": 40.0, "q/cls": 80.0}
        finally:
            await cp.stop()

    asyncio.run(scenario())


def test_analyse_keeps_budgets_it_cannot_improve_on() -> None:
    q = Query.model_validate(QUERY)
    need = need_on(_profiles().curves(), ["cpu"])
    sessions = [
        Session(id="q/det", model="a", slo_ms=100, rate=40),
        Session(id="q/cls", model="b", slo_ms=100, rate=80),
        Session(id="other", model="a", slo_ms=50, rate=10),
    ]
    result = analyse([q], sessions, need)
    assert [s.id for s in result.sessions] == ["q/det", "q/cls", "other"]
    assert result.sessions[2] == sessions[2]
    [plan] = result.plans
    assert {s.id: s.budget_ms for s in plan.stages} == {
        s.id.split("/")[1]: s.slo_ms for s in result.sessions[:2]
    }
    # Infeasible at any split (an SLO below both stages' l(1)): the budgets stay.
    tight = q.model_copy(update={"slo_ms": 5.0})
    kept = analyse([tight], sessions, need)
    assert kept.changed == [] and kept.sessions == sessions
    # A query whose stage sessions are gone is not published.
    assert analyse([q], sessions[2:], need).plans == []


def test_a_schedule_gives_the_queries_for_a_plan_file() -> None:
    from control.problem import pool
    from control.query_analysis import workload_query_plans
    from control.scheduler import schedule_workload

    workload = Workload.model_validate({"queries": [QUERY]})
    sched = schedule_workload(workload, _profiles().curves(), pool("cpu"))
    [q] = workload_query_plans(workload, sched.sessions)
    assert {s.session: s.budget_ms for s in q.stages} == {s.id: s.slo_ms for s in sched.sessions}
    plan = sched.plan.model_copy(update={"queries": [q]})
    assert Plan.model_validate_json(plan.model_dump_json()) == plan
    assert workload_query_plans(workload, sched.sessions[:1]) == []


def test_the_api_lists_queries_with_their_budgets(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from control.api import create_app

    cp = _control(tmp_path / "state.sqlite")
    cp.seed(Workload.model_validate({"queries": [QUERY]}))
    with TestClient(create_app(cp, token=None)) as client:
        [q] = client.get("/v1/queries").json()["queries"]
        assert q["id"] == "q" and [s["id"] for s in q["stages"]] == ["det", "cls"]
        budgets = {s["session"]: s["budget_ms"] for s in q["plan"]["stages"]}
        plan = client.get("/v1/plan").json()
        assert {s["session"]: s["budget_ms"] for s in plan["queries"][0]["stages"]} == budgets
