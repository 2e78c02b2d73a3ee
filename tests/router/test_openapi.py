"""The router's OpenAPI document against the router itself.

First, without servers: the document lists exactly the routes the app serves. Then
schemathesis fuzzes a real router in front of real Triton servers from the document
(positive and negative examples, free and with a model the plan serves) and checks
that every answer has a documented status code and content type and is no server
error. 503 is this router's documented "not now" (no placement, not ready), so the
server-error check lets it through; `status_code_conformance` still requires each
route to document it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.openapi.utils import get_openapi
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from model_repo_tools.fleet import Fleet, FleetGpu
from router.app import RouterService, create_app
from router.openapi import document
from router.testing import StubBackend, curves, plan
from tests.router.conftest import MODEL, write_inputs

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 25  # per operation: about 4 s for the 19 operations on two cores


def test_the_document_lists_every_route_the_app_serves() -> None:
    fleet = Fleet(gpus=[FleetGpu(id="g0", gpu_type="t", memory_bytes=1, server="127.0.0.1:1")])
    service = RouterService(
        plan(("g0", 20.0, [("s", "m", 4, 50.0)])), fleet, curves(), backend=StubBackend()
    )
    app = create_app(service)
    spec = app.openapi()
    documented = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    # FastAPI's own view of its routes, and the pages it serves outside its schema.
    routed = get_openapi(title="x", version="0", routes=app.routes)["paths"]
    served = {(path, method) for path, item in routed.items() for method in item}
    served |= {(p, "get") for p in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")}
    # The infer route is answered in front of FastAPI: it must answer its paths itself.
    infer = {(p, m) for p, m in documented - served if m == "post" and p.endswith("/infer")}
    assert documented - infer == served
    assert infer == {
        ("/v2/models/{model}/infer", "post"),
        ("/v2/models/{model}/versions/{version}/infer", "post"),
    }
    with TestClient(app) as client:
        for path in ("/v2/models/nope/infer", "/v2/models/nope/versions/1/infer"):
            r = client.post(path, json={"inputs": []})
            assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
        r = client.get("/v2/models/nope/nothing")  # no route: KServe's error body too
        assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    assert spec == document("tnx router", app.version)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                assert response.get("description"), f"{method} {path} {status}"
                if int(status) >= 400 and "content" in response:
                    assert list(response["content"]) == ["application/json"], (path, status)


@pytest.fixture
def schema(tiny, start_router, tmp_path: Path):
    router = start_router(*write_inputs(tmp_path, tiny))
    config = schemathesis.Config.from_dict(
        {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}}}
    )
    return schemathesis.openapi.from_url(f"{router.url}/openapi.json", config=config)


@pytest.mark.integration
def test_every_answer_is_one_the_document_lists(schema) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {
        f"{method.upper()} {path}"
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    # schemathesis leaves out the document's own URL.
    assert {op.label for op in operations} == documented - {"GET /openapi.json"}
    for op in operations:
        names = {p.name for p in op.path_parameters}
        known = {"model": MODEL, "version": "1"}
        pinned = {k: v for k, v in known.items() if k in names}
        strategies = [
            op.as_strategy(mode, path_parameters=params)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for params in ([None, pinned] if pinned else [None])
        ]

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies))
        def fuzz(case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=30)

        try:
            fuzz()
        except Exception as err:  # collect every operation's failure, not just the first
            failures.append(f"{op.label}: {err}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.integration
def test_served_inferences_keep_to_the_document(schema) -> None:
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        op = schema[path]["POST"]
        params = {"model": MODEL, "version": "1"} if "version" in path else {"model": MODEL}
        body = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": [0.5] * 128}]
        }
        r = op.Case(path_parameters=params, body=body, media_type="application/json")
        response = r.call_and_validate(checks=CHECKS, timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"] == ["application/json"]

        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [1, 64],
                        "parameters": {"binary_data_size": 256},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        raw = head + np.ones((1, 64), np.float32).tobytes()
        r = op.Case(
            path_parameters=params,
            body=raw,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
        response = r.call_and_validate(checks=CHECKS, timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"] == ["application/octet-stream"]
        length = int(response.headers["inference-header-content-length"][0])
        assert len(response.content) == length + 16 * 4
