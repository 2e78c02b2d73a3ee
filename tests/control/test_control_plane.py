"""The control plane against real Triton servers: actuation, a rate step re-planned onto more
servers while every request is answered once, a restart that reloads nothing, and the API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from control.actuator import Actuator
from control.store import Store
from control.types import Plan
from deploy.demo import spawn_router
from deploy.fleet import free_port, start_fleet, stop_fleet
from deploy.services import spawn
from deploy.traffic import Stream, drive
from model_repo_tools.triton_client import TritonServer
from tests.control.serve_files import serve_files, tiny_mlp_profile

pytestmark = pytest.mark.integration
TOKEN = "test-token"


def _plan(allocs: dict[str, list[tuple[str, str, int]]], gpu_type: str = "cpu") -> Plan:
    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": g,
                    "gpu_type": gpu_type,
                    "duty_cycle_ms": 50.0,
                    "allocations": [
                        {"session": s, "model": m, "batch": b, "rate": 5.0, "slo_ms": 200.0}
                        for s, m, b in items
                    ],
                }
                for g, items in allocs.items()
            ]
        }
    )


def _ready(server: str) -> dict[str, str]:
    with TritonServer(server) as s:
        return {m["name"]: m.get("state", "") for m in s.repository_index()}


def test_actuator_makes_before_breaking_and_reconciles(fleet, model_repo: Path) -> None:
    g0, g1 = fleet.gpus[0], fleet.gpus[1]
    act = Actuator(fleet, model_repo, backoff_s=0.05)
    first = _plan({g0.id: [("a", "tiny_mlp", 4)], g1.id: [("b", "scorer", 2)]})
    try:
        res = act.apply(first)
        assert sorted(res.loaded) == [(g0.id, "tiny_mlp"), (g1.id, "scorer")] and not res.failed
        assert _ready(g0.server).get("tiny_mlp") == "READY"
        with TritonServer(g0.server) as s:
            cfg = s.config("tiny_mlp")
            assert "dynamic_batching" not in cfg and cfg["instance_group"][0]["count"] == 1
        assert act.apply(first).loaded == []  # reconcile: nothing to do
        moved = _plan({g1.id: [("a", "tiny_mlp", 8), ("b", "scorer", 2)]})
        res = act.apply(moved)
        assert res.loaded == [(g1.id, "tiny_mlp")]
        assert _ready(g0.server).get("tiny_mlp") == "READY"  # make before break
        assert res.pending_unloads == [(g0.id, "tiny_mlp")]
        assert act.unload(res.pending_unloads) == [(g0.id, "tiny_mlp")]
        assert _ready(g0.server).get("tiny_mlp") != "READY"
        bad = act.apply(_plan({g0.id: [("c", "not_in_repo", 1)], g1.id: [("b", "scorer", 2)]}))
        assert list(bad.failed) == [(g0.id, "not_in_repo")]
        [u] = bad.plan.unplaced
        assert u.session == "c" and "not_in_repo" in u.reason
        assert [g.gpu for g in bad.plan.gpus] == [g1.id]
    finally:
        act.unload([(g.id, m) for g in fleet.gpus for m in ("tiny_mlp", "scorer")])


def _loads(fleet) -> int:
    return sum(Path(g.log).read_text().count("successfully loaded") for g in fleet.gpus)


def test_rate_step_moves_load_onto_more_servers_and_restart_reloads_nothing(
    model_repo: Path, tmp_path: Path
) -> None:
    fleet = start_fleet(3, model_repo, tmp_path / "fleet")
    services = []
    try:
        fleet.save(tmp_path / "fleet.json")
        # A declared profile: 25 ms a sample, so one server carries 40 req/s at most.
        files = serve_files(
            tmp_path,
            model_repo,
            [tiny_mlp_profile(25.0)],
            [{"id": "mlp", "model": "tiny_mlp", "slo_ms": 300, "rate": 10}],
        )
        router_port, control_port = free_port(), free_port()
        control_args = [
            "control",
            "serve",
            "--fleet",
            str(tmp_path / "fleet.json"),
            *files,
            "--router",
            f"http://127.0.0.1:{router_port}",
            "--epoch-s",
            "4",
            "--window-s",
            "2",
        ]
        env = {"TNX_ADMIN_TOKEN": TOKEN}
        control = spawn("control", control_args, control_port, "/healthz", tmp_path / "c.log", env)
        services.append(control)
        router = spawn_router(control.url, router_port, tmp_path / "r.log")
        services.append(router)
        body = json.dumps(
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}
                ]
            }
        ).encode()
        step_at, duration = 5.0, 15.0
        stream = Stream(
            "mlp",
            f"{router.url}/v2/models/tiny_mlp/infer",
            body,
            [(0.0, 12.0), (step_at, 48.0)],
            300.0,
            {"Content-Type": "application/json"},
        )
        t_start = time.time()
        records = asyncio.run(drive([stream], duration, seed=3))
        # Every request sent during the change got exactly one answer, 200 or 503.
        assert len(records) > 400
        assert {r.status for r in records} <= {200, 503}
        assert sum(r.status == 200 for r in records) >= 0.9 * len(records)
        history = httpx.get(f"{control.url}/v1/plan/history").json()
        spread = [h for h in history if h["gpus"] >= 2]
        assert spread, history
        assert spread[0]["applied_at"] <= t_start + step_at + 2 * 4.0 + 1.0  # two epochs
        plan = httpx.get(f"{control.url}/v1/plan").json()
        on = [
            g["gpu"]
            for g in plan["gpus"]
            if any(a["model"] == "tiny_mlp" for a in g["allocations"])
        ]
        assert len(on) >= 2
        by_id = fleet.by_id()
        assert all(_ready(by_id[g].server).get("tiny_mlp") == "READY" for g in on)

        # Kill the control plane and start it again on the same state.
        sessions = httpx.get(f"{control.url}/v1/sessions").json()["sessions"]
        control.kill()
        services.remove(control)
        # What it last applied (an epoch may have re-planned since the GET above).
        store = Store(tmp_path / "state.sqlite")
        revision, last = store.last_plan()  # type: ignore[misc]
        store.close()
        loads_before = _loads(fleet)
        again = spawn("control", control_args, control_port, "/healthz", tmp_path / "c2.log", env)
        services.append(again)
        replan = httpx.get(f"{again.url}/v1/plan").json()
        assert replan["revision"] == revision
        assert replan["gpus"] == last.model_dump(mode="json")["gpus"]
        assert [s["id"] for s in httpx.get(f"{again.url}/v1/sessions").json()["sessions"]] == [
            s["id"] for s in sessions
        ]
        time.sleep(2.0)
        assert _loads(fleet) == loads_before
        metrics = httpx.get(f"{again.url}/metrics").text
        assert "tnx_control_model_loads_total 0.0" in metrics

        # The API: writes need the token; bad input is a 400 naming it.
        put = {"model": "tiny_mlp", "slo_ms": 100, "rate": 2}
        assert httpx.put(f"{again.url}/v1/sessions/new", json=put).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.put(f"{again.url}/v1/sessions/new", json=put, headers=auth)
        assert r.status_code == 200 and r.json()["id"] == "new"
        r = httpx.put(f"{again.url}/v1/sessions/x", json={**put, "model": "nope"}, headers=auth)
        assert r.status_code == 400 and "nope" in r.json()["error"]
        r = httpx.put(f"{again.url}/v1/sessions/x", json={**put, "slo_ms": -1}, headers=auth)
        assert r.status_code == 422
        ids = [s["id"] for s in httpx.get(f"{again.url}/v1/sessions").json()["sessions"]]
        assert "new" in ids and "x" not in ids
        assert httpx.delete(f"{again.url}/v1/sessions/new", headers=auth).status_code == 204
        assert httpx.delete(f"{again.url}/v1/sessions/new", headers=auth).status_code == 404
    finally:
        for svc in reversed(services):
            svc.stop(5)
        stop_fleet(fleet, grace_s=5)
