"""`tnx control serve --fleet-from k8s:… --lease …` end to end on this machine: two control
plane processes under one Lease, the real `kubernetes` client reaching an API server
that speaks the Kubernetes REST JSON (`k8s_api`) through a kubeconfig, and real
`tritonserver` processes as the Service's endpoints. The leader discovers and plans on
them, follows a server leaving and coming back; the standby answers 503 and, once the
leader is killed, takes over from the shared state."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.fleet import free_port
from deploy.services import Service, spawn, wait_until
from tests.control.k8s_api import FakeApi, endpoint, endpoint_slice, fake_api
from tests.control.serve_files import serve_files, tiny_mlp_profile
from tnx.errors import TnxError

pytestmark = pytest.mark.integration
LABELS = {"tnx.dev/gpu-type": "cpu", "tnx.dev/gpu-memory": str(2**34)}


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": url}}],
                "users": [{"name": "test", "user": {"token": "not-checked"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    return path


def server_slice(i: int, grpc: str) -> dict:
    host, port = grpc.rsplit(":", 1)
    return endpoint_slice(
        f"triton-{i}",
        "triton",
        [endpoint(host, pod=f"triton-{i}")],
        labels=LABELS,
        grpc_port=int(port),
    )


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as a:
        yield a


def test_two_replicas_discover_the_fleet_and_hand_over(
    fleet, model_repo: Path, tmp_path: Path, api: FakeApi
) -> None:
    for i, g in enumerate(fleet.gpus):
        api.put_slice(server_slice(i, g.server))
    files = serve_files(
        tmp_path,
        model_repo,
        [tiny_mlp_profile(5.0)],
        [{"id": "mlp", "model": "tiny_mlp", "slo_ms": 100, "rate": 300}],
    )
    services: dict[str, Service] = {}

    def start(name: str, ready: str) -> Service:
        args = [
            "control",
            "serve",
            "--fleet-from",
            "k8s:tnx/triton",
            "--lease",
            "tnx/tnx-control",
            "--identity",
            name,
            "--lease-duration-s",
            "3",
            "--renew-deadline-s",
            "2",
            "--retry-period-s",
            "0.5",
            "--wait",
            "30",
            *files,
            "--epoch-s",
            "3600",
        ]
        env = {"KUBECONFIG": str(kubeconfig(tmp_path / f"{name}.kubeconfig", api.door()))}
        log = tmp_path / f"{name}.log"
        services[name] = spawn(name, args, free_port(), ready, log, env, timeout_s=90)
        return services[name]

    try:
        a = start("a", "/healthz")  # ready: it leads and has applied a plan
        b = start("b", "/metrics")  # a standby answers /metrics only
        with httpx.Client(timeout=5.0) as http:
            fl = http.get(f"{a.url}/v1/fleet").json()
            assert sorted(g["id"] for g in fl["gpus"]) == ["triton-0/0", "triton-1/0"]
            assert all(g["gpu_type"] == "cpu" and g["memory_bytes"] == 2**34 for g in fl["gpus"])
            plan = http.get(f"{a.url}/v1/plan").json()
            assert {g["gpu"] for g in plan["gpus"]} <= {"triton-0/0", "triton-1/0"}
            # b answers as soon as it serves; it names the leader once it has read the Lease.
            assert wait_until(lambda: http.get(f"{b.url}/v1/plan").json()["leader"] == "a", 10)
            r = http.get(f"{b.url}/v1/plan")
            assert r.status_code == 503 and r.json() | {"error": ""} == {
                "error": "",
                "reason": "standby",
                "leader": "a",
            }
            assert http.get(f"{b.url}/healthz").status_code == 503

            # triton-1's pod goes: it leaves the fleet as a failed server does.
            gone = fleet.gpus[1].server
            api.delete_slice("tnx", "triton-1")

            def health() -> dict[str, dict]:
                rows = http.get(f"{a.url}/v1/fleet/health").json()["servers"]
                return {row["server"]: row for row in rows}

            assert wait_until(lambda: not health()[gone]["up"], 30)
            assert "gone from the EndpointSlices of tnx/triton" in health()[gone]["error"]
            assert wait_until(
                lambda: (
                    "triton-1/0"
                    not in {g["gpu"] for g in http.get(f"{a.url}/v1/plan").json()["gpus"]}
                ),
                30,
            )
            # Back under its name: it qualifies, then fails back after its healthy probes.
            api.put_slice(server_slice(1, gone))
            assert wait_until(lambda: health()[gone]["up"], 40)
            assert len(http.get(f"{a.url}/v1/fleet").json()["gpus"]) == 2
            revision = http.get(f"{a.url}/v1/plan").json()["revision"]

            # The leader dies without releasing the Lease: b takes over after it expires
            # and carries on from the shared state (the same sessions, the plan revision).
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            killed = time.monotonic()
            assert wait_until(lambda: http.get(f"{b.url}/healthz").status_code == 200, 60, 0.2)
            took = time.monotonic() - killed
            assert took >= 2.0, took  # not before a's Lease could have expired
            plan = http.get(f"{b.url}/v1/plan").json()
            assert plan["revision"] >= revision
            sessions = http.get(f"{b.url}/v1/sessions").json()["sessions"]
            assert [s["id"] for s in sessions] == ["mlp"]
            lease = api.lease("tnx", "tnx-control")
            assert lease is not None and lease["spec"]["holderIdentity"] == "b"
            assert lease["spec"]["leaseTransitions"] >= 1
        b.stop(15)
        lease = api.lease("tnx", "tnx-control")
        assert lease is not None and lease["spec"].get("holderIdentity") is None  # released
    finally:
        for s in services.values():
            s.stop(5)
        # The fleet is shared with other tests: leave its servers as they were.
        from model_repo_tools.triton_client import TritonServer

        for g in fleet.gpus:
            with contextlib.suppress(TnxError), TritonServer(g.server) as server:
                index = server.repository_index()
                if any(m["name"] == "tiny_mlp" and m.get("state") == "READY" for m in index):
                    server.unload("tiny_mlp")
