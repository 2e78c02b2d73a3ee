"""The schemas of the router's OpenAPI document (`components.schemas`), and the small
builders they and the paths (`router.openapi`) are made of.

The bodies are Triton's: KServe v2 inference requests and responses, model metadata,
the model configuration and statistics extensions' answers, KServe's error body;
besides them, the router's own `/v1/sessions` and `/v1/queries/{query}` answer.
"""

from __future__ import annotations

from typing import Any

from router.datatypes import DATATYPES

STRING = {"type": "string"}
COUNT = {"type": "integer", "minimum": 0}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def obj(
    properties: dict[str, Any], *, optional: tuple[str, ...] = (), description: str = ""
) -> dict[str, Any]:
    """An object schema whose properties are all required but the `optional` ones."""
    out: dict[str, Any] = {"type": "object"}
    if description:
        out["description"] = description
    out["required"] = [k for k in properties if k not in optional]
    out["properties"] = properties
    return out


def _parameters(**known: dict[str, Any]) -> dict[str, Any]:
    """KServe `parameters`, with the ones the router reads described."""
    out: dict[str, Any] = {
        "type": "object",
        "description": "KServe parameters: values are strings, numbers or booleans.",
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    }
    if known:
        out["properties"] = known
    return out


def _flag(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


_SHAPE = array(COUNT)
_DATA = {
    "type": "array",
    "description": "Elements in row-major order, a flat or nested list; BYTES as strings.",
    "items": {"type": ["number", "string", "boolean", "array"]},
}
_DURATION = obj({"count": COUNT, "ns": COUNT})
_DIMS = array({"type": "integer"})
_CONFIG_TENSOR = obj({"name": STRING, "data_type": STRING, "dims": _DIMS})
_METADATA_TENSOR = obj({"name": STRING, "datatype": STRING, "shape": _DIMS})
_INFER_STATS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


def _tensor(**extra: dict[str, Any]) -> dict[str, Any]:
    """An inference request's input or a response's output."""
    datatype = {"type": "string", "enum": sorted(DATATYPES)}
    return obj(
        {"name": STRING, "shape": _SHAPE, "datatype": datatype, **extra, "data": _DATA},
        optional=("parameters", "data"),
    )


def _kserve() -> dict[str, dict]:
    """The inference protocol's bodies."""
    return {
        "Error": obj(
            {
                "error": {"type": "string", "description": "What was wrong, in one line."},
                "reason": {
                    "type": "string",
                    "description": "Why a request was not served (503s), e.g. `deadline`.",
                },
            },
            optional=("reason",),
        ),
        "RequestInput": _tensor(
            parameters=_parameters(
                binary_data_size={
                    **COUNT,
                    "description": "Bytes of this tensor after the JSON header.",
                }
            )
        ),
        "RequestOutput": obj(
            {
                "name": STRING,
                "parameters": _parameters(binary_data=_flag("Answer this output as binary data.")),
            },
            optional=("parameters",),
        ),
        "InferenceRequest": obj(
            {
                "id": STRING,
                "parameters": _parameters(
                    binary_data_output=_flag("Answer every output as binary data by default.")
                ),
                "inputs": array(ref("RequestInput")),
                "outputs": array(
                    ref("RequestOutput"),
                    description="The outputs to answer; all of them when absent.",
                ),
            },
            optional=("id", "parameters", "outputs"),
        ),
        "ResponseOutput": _tensor(parameters=_parameters()),
        "InferenceResponse": obj(
            {
                "model_name": STRING,
                "model_version": STRING,
                "id": STRING,
                "parameters": _parameters(),
                "outputs": array(ref("ResponseOutput")),
            },
            optional=("model_version", "id", "parameters"),
        ),
    }


def _models() -> dict[str, dict]:
    """Server and model metadata, configuration and statistics."""
    return {
        "ServerMetadata": obj({"name": STRING, "version": STRING, "extensions": array(STRING)}),
        "ModelMetadata": obj(
            {
                "name": STRING,
                "versions": array(STRING),
                "platform": STRING,
                "inputs": array(_METADATA_TENSOR),
                "outputs": array(_METADATA_TENSOR),
            },
            optional=("versions", "platform"),
        ),
        "ModelConfig": obj(
            {
                "name": STRING,
                "platform": STRING,
                "backend": STRING,
                "max_batch_size": COUNT,
                "input": array(_CONFIG_TENSOR),
                "output": array(_CONFIG_TENSOR),
            },
            optional=("platform", "backend"),
            description=(
                "Triton's ModelConfig as its HTTP endpoint writes it: every field, 64-bit "
                "integers as numbers. Only the fields tools rely on are listed."
            ),
        ),
        "InferStatistics": obj({k: _DURATION for k in _INFER_STATS}),
        "BatchStatistics": obj(
            {
                "batch_size": {"type": "integer", "minimum": 1},
                "compute_input": _DURATION,
                "compute_infer": _DURATION,
                "compute_output": _DURATION,
            }
        ),
        "ModelStatistics": obj(
            {
                "name": STRING,
                "version": STRING,
                "last_inference": {
                    **COUNT,
                    "description": "Milliseconds since the epoch when the last batch ended.",
                },
                "inference_count": COUNT,
                "execution_count": COUNT,
                "inference_stats": ref("InferStatistics"),
                "batch_stats": array(ref("BatchStatistics")),
            }
        ),
        "ModelStatisticsResponse": obj({"model_stats": array(ref("ModelStatistics"))}),
    }


def schemas() -> dict[str, dict]:
    session = obj(
        {
            "id": STRING,
            "model": STRING,
            "slo_ms": {"type": ["number", "null"]},
            "arrivals": COUNT,
            "queued": COUNT,
        }
    )
    sessions = obj(
        {
            "time": {"type": "number"},
            "plan_revision": {"type": "integer"},
            "sessions": array(session),
        }
    )
    query = obj(
        {
            "query": STRING,
            "id": STRING,
            "stage_done_ms": {
                "type": "object",
                "description": "Per stage, milliseconds from the query's arrival to its end.",
                "additionalProperties": {"type": "number"},
            },
            "stages": {
                "type": "object",
                "description": "Per stage id, its model's answer (KServe v2, JSON outputs).",
                "additionalProperties": ref("InferenceResponse"),
            },
        },
        optional=("id",),
    )
    return {**_kserve(), **_models(), "Sessions": sessions, "QueryResponse": query}
