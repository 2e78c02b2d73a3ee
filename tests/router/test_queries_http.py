"""`POST /v1/queries/{query}` through a real router in front of real Triton servers: a two-stage
query whose first stage fans out (bench/query_models.py: `expand` → `tiny_mlp` per item),
answered as running the two models by hand answers, within its SLO at its planned load; and
the 404, 400 and 503 answers."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.query_models import EXPAND, FANOUT, export_expand
from model_repo_tools.triton_client import TritonServer
from tests.router.conftest import MODEL, load_warm, plan_gpus

pytestmark = pytest.mark.integration
SLO_MS = 400.0
BUDGETS = {"expand": 150.0, "mlp": 250.0}


@pytest.fixture(scope="module")
def pipeline(fleet, model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    """The fleet with `expand` (added to the repository for this module) and tiny_mlp loaded,
    warm."""
    from model_repo_tools.repository import add_model

    folder = add_model(export_expand(tmp_path_factory.mktemp("expand")), model_repo, max_batch=64)
    for model in (EXPAND, MODEL):
        load_warm(fleet, model_repo, model)
    yield fleet
    for g in fleet.gpus:
        with TritonServer(g.server) as s:
            s.unload(EXPAND)
            s.unload(MODEL)
    shutil.rmtree(folder, ignore_errors=True)


def write_inputs(folder: Path, fleet) -> tuple[Path, Path, Path]:
    """A plan with the query's two stage sessions and tiny_mlp's own session on every server,
    and the query `pipe` (plus `hopeless`, whose SLO is below its stages' least latency)."""
    allocs = [
        ("pipe/expand", EXPAND, BUDGETS["expand"]),
        ("pipe/mlp", MODEL, BUDGETS["mlp"]),
        (MODEL, MODEL, 200.0),
    ]
    gpus = plan_gpus(fleet, allocs, batch=16, rate=40.0)
    stages = [
        {"id": "expand", "model": EXPAND, "session": "pipe/expand", "budget_ms": BUDGETS["expand"]},
        {
            "id": "mlp",
            "model": MODEL,
            "session": "pipe/mlp",
            "budget_ms": BUDGETS["mlp"],
            "after": "expand",
            "fanout": FANOUT,
        },
    ]
    queries = [
        {"id": "pipe", "slo_ms": SLO_MS, "rate": 10.0, "stages": stages},
        {"id": "hopeless", "slo_ms": 3.0, "rate": 1.0, "stages": stages},
    ]
    points = [{"batch": b, "latency_ms": 2.0 + 0.2 * b, "memory_bytes": 0} for b in (1, 8, 32)]
    gpu_type = fleet.gpus[0].gpu_type
    profiles = [{"model": m, "gpu_type": gpu_type, "batches": points} for m in (EXPAND, MODEL)]
    paths = folder / "plan.json", folder / "fleet.json", folder / "profiles.json"
    paths[0].write_text(json.dumps({"version": 1, "gpus": gpus, "queries": queries}))
    paths[1].write_text(fleet.model_dump_json())
    paths[2].write_text(json.dumps({"version": 1, "profiles": profiles}))
    return paths


@pytest.fixture(scope="module")
def router(pipeline, tmp_path_factory: pytest.TempPathFactory):
    from deploy.fleet import free_port
    from deploy.services import spawn

    folder = tmp_path_factory.mktemp("queries")
    plan, fleet, profiles = write_inputs(folder, pipeline)
    args = ["router", "serve", "--plan", str(plan), "--fleet", str(fleet)]
    args += ["--profiles", str(profiles)]
    service = spawn("router", args, free_port(), "/v2/health/ready", folder / "router.log")
    try:
        yield service
    finally:
        service.stop(15)


def _json_body(x: np.ndarray) -> dict:
    return {
        "id": "q1",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ],
    }


def _outputs(stage: dict) -> dict[str, np.ndarray]:
    return {
        o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
        for o in stage["outputs"]
    }


def test_a_two_stage_query_answers_as_its_models_run_by_hand(router, pipeline) -> None:
    x = np.random.default_rng(0).standard_normal((2, 64), dtype=np.float32)
    with TritonServer(pipeline.gpus[0].server) as s:
        items = s.infer(EXPAND, {"input": x})["output"]
        scores = s.infer(MODEL, {"input": items.reshape(-1, 64)})["output"]
    assert items.shape == (2, FANOUT, 64)
    with httpx.Client(base_url=router.url, timeout=10) as client:
        client.post("/v1/queries/pipe", json=_json_body(x))  # first calls fetch metadata
        t0 = time.perf_counter()
        r = client.post("/v1/queries/pipe", json=_json_body(x))
        elapsed_ms = (time.perf_counter() - t0) * 1000
        assert r.status_code == 200, r.text
        assert elapsed_ms < SLO_MS
        body = r.json()
        assert body["query"] == "pipe" and body["id"] == "q1"
        got = {sid: _outputs(stage) for sid, stage in body["stages"].items()}
        np.testing.assert_allclose(got["expand"]["output"], items, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            got["mlp"]["output"], scores.reshape(2, FANOUT, -1), rtol=1e-5, atol=1e-6
        )
        assert body["stage_done_ms"]["expand"] <= body["stage_done_ms"]["mlp"] < SLO_MS
        # The same request in Triton's binary form.
        import tritonclient.http as httpclient

        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        raw, json_size = httpclient.InferenceServerClient.generate_request_body([inp])
        r = client.post(
            "/v1/queries/pipe",
            content=raw,
            headers={"Inference-Header-Content-Length": str(json_size)},
        )
        assert r.status_code == 200, r.text
        mlp = _outputs(r.json()["stages"]["mlp"])["output"]
        np.testing.assert_allclose(mlp, scores.reshape(2, FANOUT, -1), rtol=1e-5, atol=1e-6)
        # The stage requests went through the stage sessions' queues.
        sessions = {s["id"]: s["arrivals"] for s in client.get("/v1/sessions").json()["sessions"]}
        assert sessions["pipe/expand"] == 3 and sessions["pipe/mlp"] == 3 * 2 * FANOUT


def test_queries_at_their_planned_load_meet_the_slo(router) -> None:
    """40 queries in 2 s (20 req/s, 80 items/s at the second stage), each answered once."""
    x = np.random.default_rng(1).standard_normal((1, 64), dtype=np.float32)
    body = _json_body(x)

    def one(i: int, client: httpx.Client) -> tuple[int, float]:
        time.sleep(max(0.0, start + i * 0.05 - time.perf_counter()))
        t0 = time.perf_counter()
        r = client.post("/v1/queries/pipe", json=body)
        return r.status_code, (time.perf_counter() - t0) * 1000

    with httpx.Client(base_url=router.url, timeout=10) as client, ThreadPoolExecutor(16) as pool:
        client.post("/v1/queries/pipe", json=body)
        start = time.perf_counter()
        answers = list(pool.map(lambda i: one(i, client), range(40)))
    in_slo = sum(1 for status, ms in answers if status == 200 and ms <= SLO_MS)
    assert all(status in (200, 503) for status, _ in answers), answers
    assert in_slo >= 38, answers


def test_unknown_malformed_and_hopeless_queries(router) -> None:
    x = np.zeros((1, 64), dtype=np.float32)
    with httpx.Client(base_url=router.url, timeout=10) as client:
        r = client.post("/v1/queries/nope", json=_json_body(x))
        assert r.status_code == 404 and "unknown query 'nope'" in r.json()["error"]
        r = client.post("/v1/queries/pipe", content=b'{"inputs": [')
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        r = client.post("/v1/queries/pipe", json=_json_body(np.zeros((1, 63), np.float32)))
        assert r.status_code == 400 and "input 'input': shape [1, 63]" in r.json()["error"]
        r = client.post("/v1/queries/hopeless", json=_json_body(x))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["reason"] == "deadline"
        assert "query 'hopeless' not served at stage 'expand'" in r.json()["error"]
