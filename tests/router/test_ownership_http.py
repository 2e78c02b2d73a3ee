"""Many routers in front of one fleet, on real Triton servers and real HTTP: each GPU owned
by one router, requests to any router answered (forwarded to the owner when needed, binary
tensors and all), a killed router's GPUs taken over within 5 s, `--workers 2` on one port."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from deploy.fleet import free_port
from deploy.services import Service, spawn, wait_until
from model_repo_tools.triton_client import TritonServer

pytestmark = pytest.mark.integration
MODELS = {"tiny_mlp": (64,), "scorer": (4, 24)}


@pytest.fixture
def control(fleet, model_repo: Path, tmp_path: Path) -> Iterator[Service]:
    """A control plane on the 2-server fleet whose plan puts each model on a server of its
    own (0.6 of a server each by the declared profile), with no rate window filled during
    a test (so no re-plan); both models unloaded at the end."""
    fleet.save(tmp_path / "fleet.json")
    points = [{"batch": b, "latency_ms": 25.0 * b, "memory_bytes": 1} for b in (1, 2, 4, 8)]
    gpu_type = fleet.gpus[0].gpu_type
    profiles = [{"model": m, "gpu_type": gpu_type, "batches": points} for m in MODELS]
    (tmp_path / "profiles.json").write_text(json.dumps({"profiles": profiles}))
    sessions = [{"id": m, "model": m, "slo_ms": 300, "rate": 24} for m in MODELS]
    (tmp_path / "workload.json").write_text(json.dumps({"sessions": sessions}))
    args = ["control", "serve", "--fleet", str(tmp_path / "fleet.json")]
    args += ["--repo", str(model_repo), "--profiles", str(tmp_path / "profiles.json")]
    args += ["--workload", str(tmp_path / "workload.json"), "--epoch-s", "600"]
    args += ["--window-s", "600", "--state", str(tmp_path / "state.sqlite")]
    svc = spawn("control", args, free_port(), "/healthz", tmp_path / "control.log")
    try:
        yield svc
    finally:
        svc.stop(5)
        for g in fleet.gpus:
            with TritonServer(g.server) as s:
                for m in MODELS:
                    s.unload(m)


def _router(control: Service, tmp_path: Path, *extra: str) -> Service:
    port = free_port()
    args = ["router", "serve", "--control", control.url, *extra]
    return spawn("router", args, port, "/v2/health/ready", tmp_path / f"router-{port}.log")


def _owners(control: Service) -> dict[str, list[str]]:
    """router URL → the GPUs it owns, as the control plane has them now."""
    body = httpx.get(f"{control.url}/v1/routers").json()
    return {r["url"]: r["gpus"] for r in body["routers"]}


def _model_owner(control: Service) -> dict[str, str]:
    plan = httpx.get(f"{control.url}/v1/plan").json()
    return {a["model"]: g["owner"] for g in plan["gpus"] for a in g["allocations"]}


def _routers_run(control: Service, routers: list[str], timeout_s: float = 10.0) -> bool:
    """Whether, within `timeout_s`, every router in `routers` owns a GPU and each runs the
    control plane's current owners (one poll after the last move)."""
    ok = wait_until(
        lambda: sorted(_owners(control)) == sorted(routers) and all(_owners(control).values()),
        timeout_s,
        0.2,
    )
    time.sleep(1.0)  # every router polls every 0.5 s
    return ok


def _infer(url: str, model: str, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = httpclient.InferRequestedOutput("output", binary_data=True)
    return client.infer(model, [inp], outputs=[out]).as_numpy("output")


def _body(model: str) -> bytes:
    shape = [1, *MODELS[model]]
    data = [0.1] * int(np.prod(shape))
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}]}
    ).encode()


def _statuses(urls: list[str], n: int) -> list[int]:
    """n requests to each model through each router, 4 at a time."""
    jobs = [(u, m) for u in urls for m in MODELS for _ in range(n)]
    with httpx.Client(timeout=10) as c, cf.ThreadPoolExecutor(4) as pool:
        return list(
            pool.map(
                lambda job: (
                    c.post(f"{job[0]}/v2/models/{job[1]}/infer", content=_body(job[1])).status_code
                ),
                jobs,
            )
        )


def test_two_routers_own_a_gpu_each_forward_and_take_over_a_killed_one(
    control: Service, fleet, tmp_path: Path
) -> None:
    a = _router(control, tmp_path)
    b = _router(control, tmp_path)
    try:
        assert _routers_run(control, [a.url, b.url])
        owner = _model_owner(control)
        assert sorted(owner.values()) == sorted([a.url, b.url])  # one model per router
        codes = _statuses([a.url, b.url], 20)
        assert codes.count(200) == len(codes), codes
        for r in (a, b):
            assert httpx.get(f"{r.url}/v1/sessions").json()["forwarded"] >= 20
        # A forwarded request (binary tensors both ways) gets what Triton itself answers.
        x = np.random.default_rng(0).standard_normal((3, 64), dtype=np.float32)
        elsewhere = a if owner["tiny_mlp"] == b.url else b
        plan = httpx.get(f"{control.url}/v1/plan").json()
        [gpu] = [g["gpu"] for g in plan["gpus"] if g["allocations"][0]["model"] == "tiny_mlp"]
        direct = _infer(f"http://{fleet.by_id()[gpu].http}", "tiny_mlp", x)
        np.testing.assert_allclose(_infer(elsewhere.url, "tiny_mlp", x), direct, rtol=1e-6)
        # Loop guard: a request forwarded once is never forwarded again.
        r = httpx.post(
            f"{elsewhere.url}/v2/models/tiny_mlp/infer",
            content=_body("tiny_mlp"),
            headers={"X-TNX-Deadline-Ms": "250"},
        )
        assert r.status_code == 503 and r.json()["reason"] == "not_owner"
        # Kill the owner of tiny_mlp: within 5 s the other router serves it itself.
        dead, alive = (a, b) if owner["tiny_mlp"] == a.url else (b, a)
        dead.kill()
        killed = time.monotonic()
        url = f"{alive.url}/v2/models/tiny_mlp/infer"
        with httpx.Client(timeout=5) as c:
            served = wait_until(
                lambda: c.post(url, content=_body("tiny_mlp")).status_code == 200, 5.0, 0.1
            )
        assert served, f"{alive.url} did not take tiny_mlp over within 5 s"
        assert time.monotonic() - killed < 5.0
        assert _owners(control) == {alive.url: sorted(g.id for g in fleet.gpus)}
    finally:
        a.stop(5)
        b.stop(5)


def test_workers_share_one_port(control: Service, tmp_path: Path) -> None:
    router = _router(control, tmp_path, "--workers", "2")
    try:
        assert wait_until(lambda: len(_owners(control)) == 2, 20.0, 0.2), _owners(control)
        assert _routers_run(control, list(_owners(control)))
        codes = _statuses([router.url], 30)
        assert codes.count(200) == len(codes), codes
        # Both workers took requests on the public port: each served its own model.
        served = [
            sum(s["arrivals"] for s in httpx.get(f"{w}/v1/sessions").json()["sessions"])
            for w in _owners(control)
        ]
        assert all(n > 0 for n in served), served
        # A SIGKILLed supervisor takes its workers with it.
        workers = list(_owners(control))
        router.kill()
        assert wait_until(lambda: not any(_answers(w) for w in workers), 10.0, 0.2)
    finally:
        router.stop(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
