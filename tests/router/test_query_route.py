"""`POST /v1/queries/{query}` in process, over a numpy backend: fan-out, the answer's layout,
and the 4xx/503 answers (tests/router/test_queries_http.py runs it on real Triton servers)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from control.types import Plan
from model_repo_tools.fleet import Fleet, FleetGpu
from router.app import RouterService, create_app
from router.testing import StubBackend, curves
from router.types import Request

META = {
    "split": ({"x": [-1, 4]}, {"parts": [-1, 3, 4]}),
    "head": ({"v": [-1, 4]}, {"y": [-1, 1]}),
}


class NumpyBackend(StubBackend):
    """`split` gives each sample's x, 2x and 3x; `head` sums each item."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []

    async def metadata(self, gpu: str, model: str) -> tuple[dict[str, Any], int]:
        ins, outs = META[model]

        def tensors(d: dict[str, list[int]]) -> list[dict[str, Any]]:
            return [{"name": n, "datatype": "FP32", "shape": s} for n, s in d.items()]

        return {
            "name": model,
            "versions": ["1"],
            "inputs": tensors(ins),
            "outputs": tensors(outs),
        }, 8

    async def infer(
        self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
    ) -> list[dict[str, np.ndarray]]:
        self.batches.append((model, len(batch)))
        out = []
        for r in batch:
            if model == "split":
                x = r.payload["x"]
                out.append({"parts": np.stack([x, 2 * x, 3 * x], axis=1)})
            else:
                out.append({"y": r.payload["v"].sum(axis=1, keepdims=True)})
        return out


def _plan() -> Plan:
    allocs = [
        {"session": "q/split", "model": "split", "batch": 8, "rate": 10.0, "slo_ms": 400.0},
        {"session": "q/head", "model": "head", "batch": 8, "rate": 30.0, "slo_ms": 600.0},
    ]
    stages = [
        {"id": "split", "model": "split", "session": "q/split", "budget_ms": 400.0},
        {"id": "head", "model": "head", "session": "q/head", "budget_ms": 600.0, "after": "split"},
    ]
    return Plan.model_validate(
        {
            "gpus": [{"gpu": "g0", "gpu_type": "t", "duty_cycle_ms": 20.0, "allocations": allocs}],
            "queries": [
                {"id": "q", "slo_ms": 1000.0, "stages": stages},
                {"id": "tight", "slo_ms": 8.0, "stages": stages},  # below l(1) + l(1) = 10 ms
            ],
        }
    )


@pytest.fixture
def client() -> Iterator[tuple[TestClient, NumpyBackend]]:
    fleet = Fleet(gpus=[FleetGpu(id="g0", gpu_type="t", memory_bytes=1, server="127.0.0.1:1")])
    backend = NumpyBackend()
    service = RouterService(
        _plan(), fleet, curves(split={1: 5.0, 8: 6.0}, head={1: 5.0, 8: 6.0}), backend=backend
    )
    with TestClient(create_app(service)) as c:
        yield c, backend


def _body(x: np.ndarray) -> dict[str, Any]:
    return {
        "id": "r1",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ],
    }


def test_a_query_runs_its_stages_with_fan_out(client) -> None:
    c, backend = client
    x = np.array([[1, 2, 3, 4], [0, 0, 1, 0]], dtype=np.float32)
    r = c.post("/v1/queries/q", json=_body(x))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "q" and body["id"] == "r1"
    assert set(body["stages"]) == {"split", "head"} and set(body["stage_done_ms"]) == {
        "split",
        "head",
    }
    [parts] = body["stages"]["split"]["outputs"]
    assert parts["name"] == "parts" and parts["shape"] == [2, 3, 4]
    [y] = body["stages"]["head"]["outputs"]
    assert body["stages"]["head"]["model_name"] == "head"
    assert y["shape"] == [2, 3, 1]
    expected = (x.sum(axis=1)[:, None] * np.array([1, 2, 3])).ravel().tolist()
    assert y["data"] == expected
    # One request of two samples to the root, six one-sample items to the head.
    assert sum(n for m, n in backend.batches if m == "split") == 1
    assert sum(n for m, n in backend.batches if m == "head") == 6
    metrics = c.get("/metrics").text
    assert 'tnx_router_queries_total{outcome="answered",query="q"} 1.0' in metrics
    assert 'tnx_router_query_latency_seconds_count{query="q"} 1.0' in metrics


def test_unknown_malformed_and_hopeless_queries(client) -> None:
    c, backend = client
    r = c.post("/v1/queries/nope", json=_body(np.ones((1, 4), np.float32)))
    assert r.status_code == 404 and "unknown query 'nope'" in r.json()["error"]
    r = c.post("/v1/queries/q", content=b"{not json")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = c.post("/v1/queries/q", json=_body(np.ones((1, 5), np.float32)))
    assert (
        r.status_code == 400
        and "input 'x': shape [1, 5] does not match [-1, 4]" in r.json()["error"]
    )
    r = c.post("/v1/queries/tight", json=_body(np.ones((1, 4), np.float32)))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert (
        r.json()["reason"] == "deadline"
        and "query 'tight' not served at stage" in r.json()["error"]
    )
    assert backend.batches == []  # nothing ran for any of them


class RemoteHead:
    """A forwarder to a router that owns `q/head`: runs `head` on the decoded request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes | None, float]] = []

    async def forward(self, owner, path, headers, body, budget):
        from router import kserve
        from router.infer_route import Reply

        self.calls.append((owner, path, headers.slo_ms, budget))
        req = kserve.decode_request(body, int(headers.header_length))
        y = req.inputs["v"].sum(axis=1, keepdims=True)
        out, extra = kserve.encode_response("head", "1", {"y": y}, req)
        return Reply(200, out, [(k.lower().encode(), v.encode()) for k, v in extra.items()])

    async def close(self) -> None:
        pass


def test_a_stage_whose_gpus_another_router_owns_is_forwarded(client) -> None:
    from types import SimpleNamespace

    c, backend = client
    service = c.app.state.service
    remote = RemoteHead()
    service.forwarder = remote
    service.share = SimpleNamespace(target=lambda s, now: "http://other" if s == "q/head" else None)
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    r = c.post("/v1/queries/q", json=_body(x))
    assert r.status_code == 200, r.text
    [y] = r.json()["stages"]["head"]["outputs"]
    assert y["shape"] == [1, 3, 1] and y["data"] == [10.0, 20.0, 30.0]
    assert [m for m, _ in backend.batches] == ["split"]  # head ran on the other router
    assert len(remote.calls) == 3
    owner, path, slo, budget = remote.calls[0]
    assert (owner, path, slo) == ("http://other", "/v2/models/head/infer", b"600.0")
    assert 0 < budget <= 1000.0


def test_a_new_plan_brings_new_queries_and_budgets(client) -> None:
    c, _ = client
    service = c.app.state.service
    plan = _plan()
    moved = plan.model_copy(deep=True)
    moved.queries[0].stages[1].budget_ms = 550.0
    moved.queries = moved.queries[:1]
    service.switch_plan(moved, revision=2)
    assert service.queries.get("q").stage("head").budget_ms == 550.0
    r = c.post("/v1/queries/tight", json=_body(np.ones((1, 4), np.float32)))
    assert r.status_code == 503 and r.json()["reason"] == "no_placement"  # known, not now
    service.switch_plan(plan.model_copy(update={"gpus": []}), revision=3)
    r = c.post("/v1/queries/q", json=_body(np.ones((1, 4), np.float32)))
    assert r.status_code == 503 and "'q/split' is not placed" in r.json()["error"]
