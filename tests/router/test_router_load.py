"""The router under the conditions of issue 8, on real Triton servers and real HTTP: the
lock-out after a stall, known-but-unplaced models, clients that vanish or send too much."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.router.conftest import load_warm
from tests.router.test_router_http import write_inputs

pytestmark = pytest.mark.integration

BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


@pytest.fixture
def one_server(model_repo: Path, tmp_path: Path):
    from deploy.fleet import start_fleet, stop_fleet

    own_fleet = start_fleet(1, model_repo, tmp_path / "fleet")
    try:
        load_warm(own_fleet, model_repo)
        yield own_fleet
    finally:
        # A test that fails while the server is stopped must not leave it stopped.
        os.killpg(own_fleet.gpus[0].pid, signal.SIGCONT)
        stop_fleet(own_fleet, grace_s=5)


def test_after_a_stall_the_router_serves_again(one_server, start_router, tmp_path: Path) -> None:
    """Issue 8's lock-out, replayed on a real server: a batch that takes 100x its SLO made
    the old correction drop every later request, for as long as the router ran. The grace
    is raised so that the stalled batch is answered (late) and the correction sees it; with
    the default, a stall this long is a hung server (test_failover.py)."""
    router = start_router(
        *write_inputs(tmp_path, one_server, slo_ms=100.0), "--batch-grace-ms", "2000"
    )
    server = one_server.gpus[0]
    with httpx.Client(base_url=router.url, timeout=30) as c:
        for _ in range(5):
            r = c.post("/v2/models/tiny_mlp/infer", json=BODY)
            assert r.status_code == 200, r.text
        os.killpg(server.pid, signal.SIGSTOP)
        stalled: list[int] = []
        t = threading.Thread(
            target=lambda: stalled.append(
                httpx.post(
                    f"{router.url}/v2/models/tiny_mlp/infer", json=BODY, timeout=30
                ).status_code
            )
        )
        t.start()
        time.sleep(0.6)  # that batch takes ≥ 600 ms against a 100 ms SLO
        os.killpg(server.pid, signal.SIGCONT)
        t.join()
        assert stalled == [200]
        codes = []
        start = time.monotonic()
        while time.monotonic() - start < 4.0:
            codes.append((time.monotonic() - start, c.post("/v2/models/tiny_mlp/infer", json=BODY)))
            time.sleep(0.02)
        metrics = c.get("/metrics").text
    late = [r for at, r in codes if at >= 1.5]
    assert len(late) > 20
    assert all(r.status_code == 200 for r in late), [r.json() for r in late if r.status_code != 200]
    assert 'tnx_router_latency_overhead_ms{gpu="' in metrics  # the correction is a gauge


def test_a_known_model_without_placement_is_503_an_unknown_one_404(
    one_server, start_router, tmp_path: Path
) -> None:
    plan_path, fleet_path, profiles_path = write_inputs(tmp_path, one_server)
    plan = json.loads(plan_path.read_text())
    plan["unplaced"] = [{"session": "emb", "model": "embedder", "rate": 5.0, "reason": "full"}]
    plan_path.write_text(json.dumps(plan))
    router = start_router(plan_path, fleet_path, profiles_path)
    with httpx.Client(base_url=router.url, timeout=30) as c:
        r = c.post("/v2/models/embedder/infer", json=BODY)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["reason"] == "no_placement"
        r = c.post("/v2/models/nope/infer", json=BODY)
        assert r.status_code == 404 and "nope" in r.json()["error"]


def test_clients_that_vanish_or_send_too_much(one_server, start_router, tmp_path: Path) -> None:
    router = start_router(*write_inputs(tmp_path, one_server), "--max-body-mb", "1")
    host, port = router.url.removeprefix("http://").split(":")
    # 50 clients that promise a body and disconnect halfway: nothing to answer, nothing logged.
    for _ in range(50):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                b"POST /v2/models/tiny_mlp/infer HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inputs"'
            )
    # A 300 MB body is refused from its Content-Length, before a byte of it is sent.
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v2/models/tiny_mlp/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 314572800\r\n\r\n"
        )
        s.settimeout(10)
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    with httpx.Client(base_url=router.url, timeout=30) as c:
        assert c.post("/v2/models/tiny_mlp/infer", json=BODY).status_code == 200
    log = router.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-2000:]


def test_a_fleet_without_http_addresses_is_served_over_grpc(
    one_server, start_router, tmp_path: Path
) -> None:
    plan_path, fleet_path, profiles_path = write_inputs(tmp_path, one_server)
    fleet = json.loads(fleet_path.read_text())
    for g in fleet["gpus"]:
        g.pop("http", None)
    fleet_path.write_text(json.dumps(fleet))
    router = start_router(plan_path, fleet_path, profiles_path)
    with httpx.Client(base_url=router.url, timeout=30) as c:
        r = c.post("/v2/models/tiny_mlp/infer", json=BODY)
        assert r.status_code == 200, r.text
        assert len(r.json()["outputs"][0]["data"]) == 16
