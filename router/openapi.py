"""The router's OpenAPI 3.1 document, written by hand so that it says what the routes do.

FastAPI's generated document knows the Python signatures, not the protocol: the
infer route takes a raw `Request`, so it would show no body, and no route would
list its 4xx/5xx answers. This one describes Triton's KServe v2 HTTP protocol as
the router speaks it (the JSON bodies, the binary tensor data extension, the
`X-SLO-Ms` header, the model configuration and statistics extensions) and every
status code each route answers, with its content type; `tests/router/test_openapi.py`
holds the routes to it with schemathesis. Serve it with `install(app)`.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from router.kserve import INFERENCE_HEADER
from router.openapi_schemas import COUNT, STRING, ref, schemas

JSON = "application/json"
BINARY = "application/octet-stream"


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": ref(schema)}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str, headers: dict[str, Any] | None = None) -> dict:
    return _json(description, "Error", headers)


def _empty(description: str) -> dict:
    return {"description": description}


def _param(
    name: str, where: str, description: str, schema: dict, required: bool = True
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


_MODEL = _param("model", "path", "Model name, as the plan's sessions name it.", STRING)
_VERSION = _param(
    "version", "path", "Model version, one of the `versions` its metadata lists.", STRING
)
_UNKNOWN_MODEL = _error(
    "No plan names this model, or it has no such version (or the path names no route)."
)
_NO_SERVER = _error(
    "The plan places the model nowhere now (`no_placement`), or no server holding it "
    "answered (`no_server`); try again later."
)


def _get(op_id: str, summary: str, responses: dict, *params: dict) -> dict:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = list(params)
    return {"get": op}


def _model_routes(suffix: str, op_id: str, summary: str, ok: dict) -> dict[str, dict]:
    """The `/v2/models/{model}...` route and its `/versions/{version}` twin."""
    responses = {"200": ok, "404": _UNKNOWN_MODEL, "503": _NO_SERVER}
    return {
        f"/v2/models/{{model}}{suffix}": _get(op_id, summary, responses, _MODEL),
        f"/v2/models/{{model}}/versions/{{version}}{suffix}": _get(
            f"{op_id}_version", f"{summary} (one version)", responses, _MODEL, _VERSION
        ),
    }


def _ready_routes() -> dict[str, dict]:
    ready = _empty("At least one server of the model is up (and serves the version).")
    return {
        "/v2/models/{model}/ready": _get(
            "model_ready",
            "Model readiness",
            {
                "200": ready,
                "503": _NO_SERVER,
                "404": _UNKNOWN_MODEL,
            },
            _MODEL,
        ),
        "/v2/models/{model}/versions/{version}/ready": _get(
            "model_version_ready",
            "Model version readiness",
            {
                "200": ready,
                "503": _empty("No server of the model is up, or no plan places the model now."),
                "404": _UNKNOWN_MODEL,
            },
            _MODEL,
            _VERSION,
        ),
    }


def _binary_header(description: str) -> dict:
    """The `Inference-Header-Content-Length` parameter of Triton's binary data extension."""
    return _param(INFERENCE_HEADER, "header", description, COUNT, required=False)


def _infer_body(binary_description: str | None = None) -> dict:
    """A KServe v2 InferenceRequest body, as JSON or as a JSON header and binary tensors."""
    binary: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
    if binary_description is not None:
        binary["description"] = binary_description
    return {
        "required": True,
        "content": {JSON: {"schema": ref("InferenceRequest")}, BINARY: binary},
    }


def _infer_operation(op_id: str, *params: dict) -> dict:
    retry = {
        "Retry-After": {
            "description": "Seconds to wait before sending again.",
            "required": True,
            "schema": COUNT,
        }
    }
    header_length = {
        INFERENCE_HEADER: {
            "description": "Length of the JSON header that opens a binary body.",
            "schema": COUNT,
        }
    }
    return {
        "post": {
            "operationId": op_id,
            "summary": "Inference (KServe v2), batched and dropped as the plan prescribes",
            "description": (
                "The request joins the earliest-deadline-first queue of its session: the one "
                "the `X-SLO-Ms` header names, else the model's only session. It is answered "
                "once, with its slice of a batch or with a drop (503) as soon as it can no "
                "longer meet its deadline."
            ),
            "parameters": [
                *params,
                _param(
                    "X-SLO-Ms",
                    "header",
                    "Latency SLO in milliseconds: chooses the session among the model's "
                    "sessions; required when the model has several.",
                    {"type": "number", "exclusiveMinimum": 0},
                    required=False,
                ),
                _binary_header(
                    "Binary tensor data extension: the body opens with a JSON header of "
                    "this many bytes, the tensors' raw bytes follow. Without it the whole "
                    "body is JSON."
                ),
            ],
            "requestBody": _infer_body(
                "An InferenceRequest JSON header of `Inference-Header-Content-Length` bytes, "
                "then each binary input's bytes (little-endian, row-major; a BYTES element is "
                "a 4-byte length and its bytes), in the order of `inputs`, each "
                "`parameters.binary_data_size` long."
            ),
            "responses": {
                "200": {
                    "description": (
                        "The request's outputs. JSON when every output is JSON; otherwise the "
                        "InferenceResponse JSON header followed by the binary outputs' bytes."
                    ),
                    "headers": header_length,
                    "content": {
                        JSON: {"schema": ref("InferenceResponse")},
                        BINARY: {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "400": _error(
                    "Malformed body or headers, inputs that do not fit the model, more samples "
                    "than any planned batch holds, or an `X-SLO-Ms` that names no session."
                ),
                "404": _error("No plan names this model."),
                "413": _error("The body is larger than the router accepts (`--max-body-mb`)."),
                "503": _error(
                    "Not served: it cannot meet its deadline (`deadline`, `expired`), the plan "
                    "places the model nowhere now (`no_placement`), no server of its session is "
                    "up (`no_server`, `server_down`), the router holds all the requests it may "
                    "(`overloaded`) or is shutting down (`shutting_down`); `reason` says which.",
                    retry,
                ),
            },
        }
    }


def _query_operation() -> dict:
    """`POST /v1/queries/{query}` (router.query_route, docs/queries.md)."""
    retry = {"Retry-After": {"description": "Seconds to wait.", "required": True, "schema": COUNT}}
    query = _param("query", "path", "Query id, as `workload.json` names it.", STRING)
    return {
        "post": {
            "operationId": "query",
            "summary": "Run a multi-model query end to end under its SLO",
            "description": (
                "The body is a KServe v2 inference request for the root stage's model (JSON, or "
                "the binary tensor extension). Each stage runs as requests of its session "
                "`<query>/<stage>` in the router's batching queues, its inputs taken from its "
                "parent's outputs: by name, else by position; a parent output of shape "
                "`[*lead, *dims]` feeding an input of shape `dims` fans out into `prod(lead)` "
                "one-sample requests, and the stage's outputs are `[*lead, *its dims]`. The "
                "query's deadline is its arrival plus its SLO: each stage request must end in "
                "time for the least latency of the stages after it, and the query is answered "
                "503 `deadline` as soon as that cannot be met. Outputs come back as JSON."
            ),
            "parameters": [
                query,
                _binary_header("Binary tensor data extension: length of the JSON header."),
            ],
            "requestBody": _infer_body(),
            "responses": {
                "200": _json("Every stage's outputs, keyed by stage id.", "QueryResponse"),
                "400": _error(
                    "Malformed body, or inputs that do not fit the root stage's model, or "
                    "more samples than its planned batches hold."
                ),
                "404": _error("No plan names this query."),
                "413": _error("The body is larger than the router accepts (`--max-body-mb`)."),
                "500": _error(
                    "The query's stages do not fit each other: a parent's outputs cannot feed "
                    "its child's inputs (a workload error)."
                ),
                "503": _error(
                    "Not served: the query cannot meet its deadline (`deadline`, `expired`), a "
                    "stage session has no placement now (`no_placement`), no server of a stage "
                    "is up (`no_server`, `server_down`), or the router is overloaded or "
                    "shutting down; `reason` says which.",
                    retry,
                ),
            },
        }
    }


def _paths() -> dict[str, dict]:
    text = {"content": {"text/html": {"schema": {"type": "string"}}}}
    return {
        "/v2/health/live": _get("server_live", "Liveness", {"200": _empty("The router runs.")}),
        "/v2/health/ready": _get(
            "server_ready",
            "Readiness",
            {
                "200": _empty("The router serves: its policy runs and some GPU is up."),
                "503": _empty("No GPU of the plan is up, or the router is shutting down."),
            },
        ),
        "/v2": _get(
            "server_metadata",
            "Server metadata",
            {"200": _json("Name, version and protocol extensions.", "ServerMetadata")},
        ),
        **_model_routes(
            "",
            "model_metadata",
            "Model metadata, as the model's Triton servers report it",
            _json("The model's inputs and outputs.", "ModelMetadata"),
        ),
        **_ready_routes(),
        **_model_routes(
            "/config",
            "model_config",
            "Model configuration (Triton's model configuration extension)",
            _json(
                "The servers' configuration, with `max_batch_size` the largest batch the "
                "router serves and no `dynamic_batching`.",
                "ModelConfig",
            ),
        ),
        "/v2/models/stats": _get(
            "all_model_stats",
            "Statistics of every model the plan serves (statistics extension)",
            {"200": _json("One entry per model.", "ModelStatisticsResponse")},
        ),
        **_model_routes(
            "/stats",
            "model_stats",
            "Model statistics (statistics extension), counted by the router",
            _json("Cumulative counts since the router started.", "ModelStatisticsResponse"),
        ),
        "/v2/models/{model}/infer": {
            "parameters": [_MODEL],
            **_infer_operation("model_infer"),
        },
        "/v2/models/{model}/versions/{version}/infer": {
            "parameters": [_MODEL, _VERSION],
            **_infer_operation("model_version_infer"),
        },
        "/v1/queries/{query}": _query_operation(),
        "/v1/sessions": _get(
            "sessions",
            "Per-session arrival counts, for the control plane's rate estimates",
            {"200": _json("The plan's sessions.", "Sessions")},
        ),
        "/metrics": _get(
            "metrics",
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        "/openapi.json": _get(
            "openapi",
            "This document",
            {
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        ),
        "/docs": _get("docs", "Swagger UI", {"200": {"description": "HTML.", **text}}),
        "/docs/oauth2-redirect": _get(
            "docs_oauth2_redirect",
            "Swagger UI's OAuth2 redirect page",
            {"200": {"description": "HTML.", **text}},
        ),
        "/redoc": _get("redoc", "ReDoc", {"200": {"description": "HTML.", **text}}),
    }


def document(title: str = "tnx router", version: str = "0.1.0") -> dict[str, Any]:
    """The whole document, a fresh dict."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": title,
                "version": version,
                "description": (
                    "Triton's KServe v2 HTTP protocol in front of a fleet of Triton servers: "
                    "requests are batched per session and dropped early when they cannot meet "
                    "their SLO."
                ),
            },
            "paths": _paths(),
            "components": {"schemas": schemas()},
        }
    )


def install(app: FastAPI) -> None:
    """Serve `document()` at the app's `/openapi.json` (and to its /docs) instead of
    FastAPI's generated one."""
    spec = document(app.title, app.version)
    app.openapi_schema = spec
    app.openapi = lambda: spec  # type: ignore[method-assign]
