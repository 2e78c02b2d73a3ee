"""Issue 9 on real Triton servers and real HTTP: a dead server, or one that lost its models,
never takes its sessions down. The router retries a failed batch once on the session's other
server; with none left it answers 503 with Retry-After, never 404, 400 or 500."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from model_repo_tools.triton_client import TritonServer
from tests.router.conftest import MODEL, load_warm, write_inputs

pytestmark = pytest.mark.integration

BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
NOT_NOW = ("no_server", "server_down")


@pytest.fixture
def own_fleet(model_repo: Path, tmp_path: Path):
    """Two servers of our own with MODEL loaded, warm: these tests kill and empty them."""
    from deploy.fleet import start_fleet, stop_fleet

    fleet = start_fleet(2, model_repo, tmp_path / "fleet")
    try:
        load_warm(fleet, model_repo)
        yield fleet
    finally:
        stop_fleet(fleet, grace_s=5)


def _paced(url: str, n: int, per_s: float = 50.0) -> list[httpx.Response]:
    """`n` requests at a steady `per_s`, each answered on its own thread."""
    start = time.monotonic()
    with httpx.Client(base_url=url, timeout=30) as c:

        def send(i: int) -> httpx.Response:
            time.sleep(max(0.0, start + i / per_s - time.monotonic()))
            return c.post(f"/v2/models/{MODEL}/infer", json=BODY)

        with cf.ThreadPoolExecutor(8) as pool:
            return list(pool.map(send, range(n)))


def _warm_up(url: str, within_s: float = 30.0) -> None:
    """Paced rounds of 10 until one is answered 200 throughout: then both servers have
    answered batches (the router counts them warm) before a test takes one away. A fresh
    router on a busy machine may refuse its very first requests by their deadline."""
    give_up = time.monotonic() + within_s
    while True:
        bad = [(r.status_code, r.text[:200]) for r in _paced(url, 10) if r.status_code != 200]
        if not bad:
            return
        assert time.monotonic() < give_up, f"no clean round of 10 in {within_s:.0f} s: {bad}"


def _not_now(r: httpx.Response) -> bool:
    """A 503 the client can act on: Retry-After, and a reason that says 'no server now'."""
    return (
        r.status_code == 503
        and bool(r.headers.get("retry-after"))
        and (r.json().get("reason") in NOT_NOW)
    )


def _metric(url: str, name: str, gpu: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and f'gpu="{gpu}"' in line
    )


def test_a_killed_server_s_sessions_are_served_by_the_other_then_503(
    own_fleet, start_router, tmp_path: Path
) -> None:
    router = start_router(*write_inputs(tmp_path, own_fleet))
    _warm_up(router.url)
    os.killpg(own_fleet.gpus[0].pid, signal.SIGKILL)
    answers = _paced(router.url, 100)
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503}, codes
    assert all(_not_now(r) for r in answers if r.status_code == 503)
    assert codes.count(200) >= 90  # the first batch to the dead one is retried on the other
    os.killpg(own_fleet.gpus[1].pid, signal.SIGKILL)
    answers = _paced(router.url, 30)
    assert all(_not_now(r) for r in answers), [(r.status_code, r.text) for r in answers]
    with httpx.Client(base_url=router.url, timeout=10) as c:
        assert c.get("/v2/health/ready").status_code == 503
        r = c.get(f"/v2/models/{MODEL}/ready")
        assert r.status_code == 503 and r.headers["retry-after"]
    log = router.log.read_text()
    assert "Traceback" not in log, log[-2000:]


def test_a_hung_server_costs_one_batch_and_is_taken_back_when_it_answers(
    own_fleet, start_router, tmp_path: Path
) -> None:
    router = start_router(*write_inputs(tmp_path, own_fleet))
    g0 = own_fleet.gpus[0]
    _warm_up(router.url)
    os.killpg(g0.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        answers = _paced(router.url, 100)
    finally:
        os.killpg(g0.pid, signal.SIGCONT)
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503}, codes
    # The batch on the stopped server is given up one SLO (+ grace) later; its requests
    # are past their deadline by then, the rest go to the other server.
    assert all(_not_now(r) for r in answers if r.status_code == 503)
    assert codes.count(200) >= 90
    assert "timed out after" in router.log.read_text()
    served = _metric(router.url, "tnx_router_batch_size_count", g0.id)
    deadline = time.monotonic() + 10
    while _metric(router.url, "tnx_router_batch_size_count", g0.id) == served:
        assert time.monotonic() < deadline, "g0 never came back"
        _paced(router.url, 10)


def test_a_server_that_lost_its_models_is_down_until_they_are_back(
    own_fleet, model_repo: Path, start_router, tmp_path: Path
) -> None:
    router = start_router(*write_inputs(tmp_path, own_fleet))
    g0, g1 = own_fleet.gpus
    _warm_up(router.url)
    # As if g0 restarted empty while the plan still names the model there.
    with TritonServer(g0.server) as s:
        s.unload(MODEL)
    answers = _paced(router.url, 100)  # 2 s: four ticks of the health probe
    assert [r.status_code for r in answers].count(200) >= 90
    assert all(_not_now(r) for r in answers if r.status_code != 200)
    # Its server is ready, but the probe keeps it down while the model is not: no batch
    # failed there after the first.
    assert _metric(router.url, "tnx_router_batch_failures_total", g0.id) == 1.0
    with TritonServer(g1.server) as s:
        s.unload(MODEL)
    answers = _paced(router.url, 20)
    assert all(_not_now(r) for r in answers), [(r.status_code, r.text) for r in answers]
    # Models back: the probe brings both GPUs back, and g0 serves again.
    load_warm(own_fleet, model_repo)
    served = _metric(router.url, "tnx_router_batch_size_count", g0.id)
    deadline = time.monotonic() + 10
    while _metric(router.url, "tnx_router_batch_size_count", g0.id) == served:
        assert time.monotonic() < deadline, "g0 never came back"
        _paced(router.url, 10)
    answers = _paced(router.url, 20)
    assert all(r.status_code == 200 for r in answers), [(r.status_code, r.text) for r in answers]
