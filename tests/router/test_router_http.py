"""The router over real HTTP in front of real Triton servers (`tnx router serve` as a process)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from model_repo_tools.triton_client import TritonServer
from tests.router.conftest import load_warm

pytestmark = pytest.mark.integration

MODELS = ("scorer", "tiny_mlp")


def write_inputs(folder: Path, fleet, slo_ms: float = 200.0) -> tuple[Path, Path, Path]:
    """plan.json (both models on every server), fleet.json, profiles.json for gpu type cpu."""
    gpus = []
    for g in fleet.gpus:
        allocs = [
            {"session": m, "model": m, "batch": 8, "rate": 50.0, "slo_ms": slo_ms} for m in MODELS
        ]
        gpus.append(
            {"gpu": g.id, "gpu_type": g.gpu_type, "duty_cycle_ms": 40.0, "allocations": allocs}
        )
    # Rough CPU latencies; the router corrects them online from observed batch times.
    points = [{"batch": b, "latency_ms": 2.0 + 0.2 * b, "memory_bytes": 0} for b in (1, 8, 64)]
    profiles = {
        "version": 1,
        "profiles": [
            {"model": m, "gpu_type": fleet.gpus[0].gpu_type, "batches": points} for m in MODELS
        ],
    }
    paths = folder / "plan.json", folder / "fleet.json", folder / "profiles.json"
    paths[0].write_text(json.dumps({"version": 1, "gpus": gpus, "unplaced": []}))
    paths[1].write_text(fleet.model_dump_json())
    paths[2].write_text(json.dumps(profiles))
    return paths


@pytest.fixture(scope="module")
def loaded(fleet, model_repo: Path):
    for m in MODELS:
        load_warm(fleet, model_repo, m)
    yield fleet
    for g in fleet.gpus:
        with TritonServer(g.server) as s:
            for m in MODELS:
                s.unload(m)


@pytest.fixture
def router(loaded, start_router, tmp_path: Path):
    return start_router(*write_inputs(tmp_path, loaded), "--max-body-mb", "1")


def _infer(url: str, model: str, x: np.ndarray, binary: bool = True) -> np.ndarray:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("output", binary_data=binary)
    return client.infer(model, [inp], outputs=[out]).as_numpy("output")


def test_tritonclient_http_gets_the_same_answers_as_from_triton(router, loaded) -> None:
    rng = np.random.default_rng(0)
    triton_http = f"http://{loaded.gpus[0].http}"
    for model, shape in (("scorer", (4, 24)), ("tiny_mlp", (64,))):
        for b in (1, 5):
            for binary in (True, False):
                x = rng.standard_normal((b, *shape), dtype=np.float32)
                via_router = _infer(router.url, model, x, binary)
                direct = _infer(triton_http, model, x, binary)
                np.testing.assert_allclose(via_router, direct, rtol=1e-6, atol=1e-7)
    # Default request (no outputs listed: every output, binary) also works.
    client = httpclient.InferenceServerClient(router.url.removeprefix("http://"))
    inp = httpclient.InferInput("input", [2, 64], "FP32")
    inp.set_data_from_numpy(np.ones((2, 64), np.float32))
    assert client.infer("tiny_mlp", [inp]).as_numpy("output").shape == (2, 16)
    assert client.is_server_ready() and client.is_model_ready("tiny_mlp")
    meta = client.get_model_metadata("scorer")
    assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["shape"] == [-1, 4, 24]


def test_concurrent_requests_are_batched_and_all_answered(router) -> None:
    x = np.random.default_rng(1).standard_normal((1, 64), dtype=np.float32)
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x.ravel().tolist()}
        ]
    }
    with httpx.Client(base_url=router.url, timeout=30) as c, cf.ThreadPoolExecutor(16) as pool:
        codes = list(
            pool.map(
                lambda _: c.post("/v2/models/tiny_mlp/infer", json=body).status_code, range(64)
            )
        )
        metrics = c.get("/metrics").text
    assert codes.count(200) == 64
    assert 'tnx_router_arrivals_total{session="tiny_mlp"} 64.0' in metrics
    sizes = [ln for ln in metrics.splitlines() if ln.startswith("tnx_router_batch_size_count")]
    batches = sum(float(ln.split()[-1]) for ln in sizes)
    assert 0 < batches <= 64


def _one_input(datatype: str, width: int, value: float) -> dict:
    """An infer body of tiny_mlp's one input, `input`, shaped [1, width]."""
    tensor = {"name": "input", "datatype": datatype, "shape": [1, width], "data": [value] * width}
    return {"inputs": [tensor]}


def test_bad_input_gets_4xx_naming_the_problem(router) -> None:
    infer = "/v2/models/tiny_mlp/infer"
    with httpx.Client(base_url=router.url, timeout=30) as c:
        r = c.post(infer, content=b"{not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = c.post(infer, json=_one_input("FP32", 63, 0.0))
        assert r.status_code == 400 and "input 'input'" in r.json()["error"]
        assert "[1, 63]" in r.json()["error"]
        r = c.post(infer, json=_one_input("INT32", 64, 0))
        assert r.status_code == 400 and "datatype INT32" in r.json()["error"]
        r = c.post("/v2/models/nope/infer", json={"inputs": []})
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = c.post(infer, json=_one_input("FP32", 64, 0.0), headers={"X-SLO-Ms": "5"})
        assert r.status_code == 400 and "no session with an SLO of 5 ms" in r.json()["error"]
        big = b"0" * (2 * 1024 * 1024)
        r = c.post(infer, content=big)
        assert r.status_code == 413 and "exceeds" in r.json()["error"]
        assert c.get("/v2/models/nope").status_code == 404


def test_a_server_killed_mid_run_loses_no_request(
    model_repo: Path, start_router, tmp_path: Path
) -> None:
    from deploy.fleet import start_fleet, stop_fleet

    own_fleet = start_fleet(2, model_repo, tmp_path / "fleet")
    try:
        for g in own_fleet.gpus:
            with TritonServer(g.server) as s:
                s.load("tiny_mlp")
        router = start_router(*write_inputs(tmp_path, own_fleet, slo_ms=500.0))
        body = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]
        }

        def send(i: int) -> int:
            if i == 60:
                os.killpg(own_fleet.gpus[0].pid, signal.SIGKILL)
            with httpx.Client(base_url=router.url, timeout=60) as c:
                r = c.post("/v2/models/tiny_mlp/infer", json=body)
                if r.status_code == 503:
                    assert r.json()["reason"] in ("server_down", "deadline", "expired", "no_server")
                    assert r.headers.get("retry-after")
                return r.status_code

        with cf.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(send, range(200)))
        assert len(codes) == 200 and set(codes) <= {200, 503}
        assert codes[150:].count(200) >= 45  # the surviving server carries on
        with httpx.Client(base_url=router.url, timeout=10) as c:
            metrics = c.get("/metrics").text
        assert 'tnx_router_arrivals_total{session="tiny_mlp"} 200.0' in metrics
    finally:
        stop_fleet(own_fleet, grace_s=5)
