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

from router.datatypes import DATATYPES
from router.kserve import INFERENCE_HEADER

JSON = "application/json"
BINARY = "application/octet-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ref(schema)}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str, headers: dict[str, Any] | None = None) -> dict:
    return _json(description, "Error", headers)


def _empty(description: str) -> dict:
    return {"description": description}


_NOT_ROUTED = _error(
    "No route has this path: a path parameter with `/` in it names no model "
    '(`{"error": "Not Found"}`).'
)
_MODEL = {
    "name": "model",
    "in": "path",
    "required": True,
    "description": "Model name, as the plan's sessions name it.",
    "schema": {"type": "string"},
}
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": "Model version, one of the `versions` its metadata lists.",
    "schema": {"type": "string"},
}
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


def _infer_operation(op_id: str, *params: dict) -> dict:
    retry = {
        "Retry-After": {
            "description": "Seconds to wait before sending again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    header_length = {
        INFERENCE_HEADER: {
            "description": "Length of the JSON header that opens a binary body.",
            "schema": {"type": "integer", "minimum": 0},
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
                {
                    "name": "X-SLO-Ms",
                    "in": "header",
                    "required": False,
                    "description": (
                        "Latency SLO in milliseconds: chooses the session among the model's "
                        "sessions; required when the model has several."
                    ),
                    "schema": {"type": "number", "exclusiveMinimum": 0},
                },
                {
                    "name": INFERENCE_HEADER,
                    "in": "header",
                    "required": False,
                    "description": (
                        "Binary tensor data extension: the body opens with a JSON header of "
                        "this many bytes, the tensors' raw bytes follow. Without it the whole "
                        "body is JSON."
                    ),
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": _ref("InferenceRequest")},
                    BINARY: {
                        "schema": {"type": "string", "format": "binary"},
                        "description": (
                            "An InferenceRequest JSON header of `Inference-Header-Content-"
                            "Length` bytes, then each binary input's bytes (little-endian, "
                            "row-major; a BYTES element is a 4-byte length and its bytes), in "
                            "the order of `inputs`, each `parameters.binary_data_size` long."
                        ),
                    },
                },
            },
            "responses": {
                "200": {
                    "description": (
                        "The request's outputs. JSON when every output is JSON; otherwise the "
                        "InferenceResponse JSON header followed by the binary outputs' bytes."
                    ),
                    "headers": header_length,
                    "content": {
                        JSON: {"schema": _ref("InferenceResponse")},
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


_PARAMETERS = {
    "type": "object",
    "description": "KServe parameters: values are strings, numbers or booleans.",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_DATA = {
    "type": "array",
    "description": "Elements in row-major order, a flat or nested list; BYTES as strings.",
    "items": {"type": ["number", "string", "boolean", "array"]},
}
_DURATION = {
    "type": "object",
    "required": ["count", "ns"],
    "properties": {
        "count": {"type": "integer", "minimum": 0},
        "ns": {"type": "integer", "minimum": 0},
    },
}
_CONFIG_TENSOR = {
    "type": "object",
    "required": ["name", "data_type", "dims"],
    "properties": {
        "name": {"type": "string"},
        "data_type": {"type": "string"},
        "dims": {"type": "array", "items": {"type": "integer"}},
    },
}
_METADATA_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}


def _schemas() -> dict[str, dict]:
    datatypes = sorted(DATATYPES)
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "What was wrong, in one line."},
                "reason": {
                    "type": "string",
                    "description": "Why a request was not served (503s), e.g. `deadline`.",
                },
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": _SHAPE,
                "datatype": {"type": "string", "enum": datatypes},
                "parameters": {
                    **_PARAMETERS,
                    "properties": {
                        "binary_data_size": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Bytes of this tensor after the JSON header.",
                        }
                    },
                },
                "data": _DATA,
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "parameters": {
                    **_PARAMETERS,
                    "properties": {
                        "binary_data": {
                            "type": "boolean",
                            "description": "Answer this output as binary data.",
                        }
                    },
                },
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    **_PARAMETERS,
                    "properties": {
                        "binary_data_output": {
                            "type": "boolean",
                            "description": "Answer every output as binary data by default.",
                        }
                    },
                },
                "inputs": {"type": "array", "items": _ref("RequestInput")},
                "outputs": {
                    "type": "array",
                    "items": _ref("RequestOutput"),
                    "description": "The outputs to answer; all of them when absent.",
                },
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": _SHAPE,
                "datatype": {"type": "string", "enum": datatypes},
                "parameters": _PARAMETERS,
                "data": _DATA,
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": _PARAMETERS,
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _METADATA_TENSOR},
                "outputs": {"type": "array", "items": _METADATA_TENSOR},
            },
        },
        "ModelConfig": {
            "type": "object",
            "description": (
                "Triton's ModelConfig as its HTTP endpoint writes it: every field, 64-bit "
                "integers as numbers. Only the fields tools rely on are listed."
            ),
            "required": ["name", "max_batch_size", "input", "output"],
            "properties": {
                "name": {"type": "string"},
                "platform": {"type": "string"},
                "backend": {"type": "string"},
                "max_batch_size": {"type": "integer", "minimum": 0},
                "input": {"type": "array", "items": _CONFIG_TENSOR},
                "output": {"type": "array", "items": _CONFIG_TENSOR},
            },
        },
        "InferStatistics": {
            "type": "object",
            "required": [
                "success",
                "fail",
                "queue",
                "compute_input",
                "compute_infer",
                "compute_output",
                "cache_hit",
                "cache_miss",
            ],
            "properties": {
                k: _DURATION
                for k in (
                    "success",
                    "fail",
                    "queue",
                    "compute_input",
                    "compute_infer",
                    "compute_output",
                    "cache_hit",
                    "cache_miss",
                )
            },
        },
        "BatchStatistics": {
            "type": "object",
            "required": ["batch_size", "compute_input", "compute_infer", "compute_output"],
            "properties": {
                "batch_size": {"type": "integer", "minimum": 1},
                "compute_input": _DURATION,
                "compute_infer": _DURATION,
                "compute_output": _DURATION,
            },
        },
        "ModelStatistics": {
            "type": "object",
            "required": [
                "name",
                "version",
                "last_inference",
                "inference_count",
                "execution_count",
                "inference_stats",
                "batch_stats",
            ],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "last_inference": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Milliseconds since the epoch when the last batch ended.",
                },
                "inference_count": {"type": "integer", "minimum": 0},
                "execution_count": {"type": "integer", "minimum": 0},
                "inference_stats": _ref("InferStatistics"),
                "batch_stats": {"type": "array", "items": _ref("BatchStatistics")},
            },
        },
        "ModelStatisticsResponse": {
            "type": "object",
            "required": ["model_stats"],
            "properties": {"model_stats": {"type": "array", "items": _ref("ModelStatistics")}},
        },
        "Sessions": {
            "type": "object",
            "required": ["time", "plan_revision", "sessions"],
            "properties": {
                "time": {"type": "number"},
                "plan_revision": {"type": "integer"},
                "sessions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "model", "slo_ms", "arrivals", "queued"],
                        "properties": {
                            "id": {"type": "string"},
                            "model": {"type": "string"},
                            "slo_ms": {"type": ["number", "null"]},
                            "arrivals": {"type": "integer", "minimum": 0},
                            "queued": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
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
            "components": {"schemas": _schemas()},
        }
    )


def install(app: FastAPI) -> None:
    """Serve `document()` at the app's `/openapi.json` (and to its /docs) instead of
    FastAPI's generated one."""
    spec = document(app.title, app.version)
    app.openapi_schema = spec
    app.openapi = lambda: spec  # type: ignore[method-assign]
