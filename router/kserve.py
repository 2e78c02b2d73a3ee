"""KServe v2 / Triton HTTP inference wire codec, with Triton's binary tensor data extension.

Implements the request and response bodies of ``POST /v2/models/{model}/infer`` as Triton
speaks them (KServe "Open Inference Protocol" v2 plus
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md),
so that ``tritonclient.http`` works against the router unchanged:

- a body is a JSON header, optionally followed by raw tensor bytes; the HTTP header
  ``Inference-Header-Content-Length`` gives the JSON length and each binary tensor's
  ``parameters.binary_data_size`` its byte count, in the order the tensors are listed;
- binary tensors are little-endian and row-major; a BYTES element is a 4-byte
  little-endian length followed by that many bytes;
- JSON tensors carry ``data`` as a flat or nested list; responses use flat lists.

Pure functions of bytes and numpy arrays: the HTTP layer parses headers and maps
`BadRequest` to a 400 (`router.http_errors`). Whether a decoded request fits the
model is `router.model_schema`'s question; datatypes are `router.datatypes`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.datatypes import DTYPES, triton_datatype
from tnx.errors import UserInputError

INFERENCE_HEADER = "Inference-Header-Content-Length"


class BadRequest(UserInputError):
    """The request body is malformed or does not fit the model; str(err) names the tensor."""


# --- requests ----------------------------------------------------------------------------


@dataclass(slots=True)
class InferRequest:
    """One decoded infer request. Arrays decoded from binary data may be read-only views."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    requested_outputs: list[str] | None = None  # None: every output of the model
    binary_output: dict[str, bool] = field(default_factory=dict)  # per requested output
    binary_output_default: bool = False  # request parameter binary_data_output
    parameters: dict[str, Any] = field(default_factory=dict)  # request-level, as sent
    input_datatypes: dict[str, str] = field(default_factory=dict)  # as declared on the wire

    def wants_binary(self, output: str) -> bool:
        """Whether `output` goes back as binary data rather than a JSON list."""
        return self.binary_output.get(output, self.binary_output_default)


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` HTTP header as `decode_request` takes it."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise BadRequest(f"{INFERENCE_HEADER} {value!r} is not an integer") from None


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode an infer request body; `header_length` is ``Inference-Header-Content-Length``."""
    view = memoryview(body)
    has_header = header_length is not None
    if header_length is None:
        header_length = len(view)
    elif header_length < 0:
        raise BadRequest(f"{INFERENCE_HEADER} is negative ({header_length})")
    elif header_length > len(view):
        raise BadRequest(
            f"{INFERENCE_HEADER} {header_length} is beyond the body's {len(view)} bytes"
        )
    try:
        header = json.loads(bytes(view[:header_length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"malformed JSON in request: {e}") from None
    if not isinstance(header, dict):
        raise BadRequest("request JSON must be an object")

    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("request 'id' must be a string")
    parameters = header.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("request 'parameters' must be an object")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequest("request parameter 'binary_data_output' must be a boolean")

    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise BadRequest("request has no 'inputs' list")
    req = InferRequest({}, request_id, parameters=parameters, binary_output_default=binary_default)
    offset = header_length
    for i, raw in enumerate(raw_inputs):
        name, datatype, shape, params = _tensor_header(raw, f"inputs[{i}]", "input")
        if name in req.inputs:
            raise BadRequest(f"input '{name}': given more than once")
        if "shared_memory_region" in params:
            raise BadRequest(f"input '{name}': shared memory is not supported by the router")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input '{name}': binary_data_size must be a non-negative integer")
            if "data" in raw:
                raise BadRequest(f"input '{name}': has both 'data' and binary_data_size")
            end = offset + size
            if end > len(view):
                raise BadRequest(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(view) - offset} bytes left after the JSON header of "
                    f"{header_length} bytes)"
                    + ("" if has_header else f"; binary inputs need the {INFERENCE_HEADER} header")
                )
            array = from_binary(view[offset:end], datatype, shape, f"input '{name}'")
            offset = end
        elif "data" in raw:
            array = _from_json(raw["data"], datatype, shape, f"input '{name}'")
        else:
            raise BadRequest(f"input '{name}': has neither 'data' nor binary_data_size")
        req.inputs[name] = array
        req.input_datatypes[name] = datatype
    if offset != len(view):
        raise BadRequest(
            f"body has {len(view) - offset} bytes after the last binary input "
            f"(the inputs' binary_data_size sum to {offset - header_length}, "
            f"the body carries {len(view) - header_length} after the JSON header)"
        )

    req.requested_outputs, req.binary_output = _decode_outputs(
        header.get("outputs"), binary_default
    )
    return req


def _decode_outputs(
    raw_outputs: Any, binary_default: bool
) -> tuple[list[str] | None, dict[str, bool]]:
    if not raw_outputs:  # absent or empty: Triton returns every output
        return None, {}
    if not isinstance(raw_outputs, list):
        raise BadRequest("request 'outputs' must be a list")
    requested: list[str] = []
    binary_output: dict[str, bool] = {}
    for i, raw in enumerate(raw_outputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a string 'name'")
        name = raw["name"]
        if name in binary_output:
            raise BadRequest(f"output '{name}': requested more than once")
        params = raw.get("parameters", {})
        if not isinstance(params, dict):
            raise BadRequest(f"output '{name}': 'parameters' must be an object")
        if "shared_memory_region" in params:
            raise BadRequest(f"output '{name}': shared memory is not supported by the router")
        if params.get("classification", 0):
            raise BadRequest(f"output '{name}': classification is not supported by the router")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise BadRequest(f"output '{name}': parameter binary_data must be a boolean")
        requested.append(name)
        binary_output[name] = binary
    return requested, binary_output


def _tensor_header(raw: Any, where: str, kind: str) -> tuple[str, str, list[int], dict]:
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object")
    name = raw.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"{where} has no string 'name'")
    label = f"{kind} '{name}'"
    datatype = raw.get("datatype")
    if datatype is None:
        raise BadRequest(f"{label}: missing 'datatype'")
    if datatype not in DTYPES:
        raise BadRequest(
            f"{label}: unknown datatype {datatype!r} (expected one of {', '.join(DTYPES)})"
        )
    shape = raw.get("shape")
    if shape is None:
        raise BadRequest(f"{label}: missing 'shape'")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"{label}: shape {shape!r} must be a list of non-negative integers")
    params = raw.get("parameters", {})
    if not isinstance(params, dict):
        raise BadRequest(f"{label}: 'parameters' must be an object")
    return name, datatype, shape, params


def from_binary(buf: memoryview, datatype: str, shape: list[int], label: str) -> np.ndarray:
    """A tensor from its binary form (BadRequest, naming `label`, when the bytes do not fit)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        elements = _split_bytes(buf, label)
        if len(elements) != count:
            raise BadRequest(
                f"{label}: binary data holds {len(elements)} BYTES elements, "
                f"shape {shape} needs {count}"
            )
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    expected = count * DTYPES[datatype].itemsize
    if len(buf) != expected:
        raise BadRequest(
            f"{label}: binary_data_size is {len(buf)} bytes, {datatype} shape {shape} "
            f"needs {expected}"
        )
    return np.frombuffer(buf, dtype=DTYPES[datatype]).reshape(shape)


def _split_bytes(buf: memoryview, label: str) -> list[bytes]:
    elements = []
    offset, end = 0, len(buf)
    while offset < end:
        if offset + 4 > end:
            raise BadRequest(f"{label}: BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", buf, offset)
        offset += 4
        if offset + length > end:
            raise BadRequest(
                f"{label}: BYTES element {len(elements)} claims {length} bytes, "
                f"only {end - offset} remain"
            )
        elements.append(bytes(buf[offset : offset + length]))
        offset += length
    return elements


_JSON_KINDS = {  # numpy kinds of the inferred array that each datatype accepts from JSON
    "BOOL": "b",
    "UINT8": "iu",
    "UINT16": "iu",
    "UINT32": "iu",
    "UINT64": "iu",
    "INT8": "iu",
    "INT16": "iu",
    "INT32": "iu",
    "INT64": "iu",
    "FP16": "iuf",
    "FP32": "iuf",
    "FP64": "iuf",
    "BF16": "iuf",
}


def _from_json(data: Any, datatype: str, shape: list[int], label: str) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]  # a lone scalar, as some clients send for shape [1] or []
    if datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise BadRequest(
                f"{label}: 'data' has {len(flat)} elements, shape {shape} needs {count}"
            )
        if not all(isinstance(x, str) for x in flat):
            raise BadRequest(f"{label}: BYTES 'data' must be strings")
        array = np.empty(count, dtype=np.object_)
        array[:] = [x.encode() for x in flat]
        return array.reshape(shape)
    try:
        parsed = np.asarray(data)
    except ValueError:  # ragged nesting: Triton reads nested lists by flattening them
        parsed = np.asarray(_flatten(data))
    if parsed.size != count:
        raise BadRequest(f"{label}: 'data' has {parsed.size} elements, shape {shape} needs {count}")
    if count == 0:
        return np.empty(shape, dtype=DTYPES[datatype])
    target = DTYPES[datatype]
    if target.kind in "iu" and parsed.dtype.kind not in "iu":
        # numpy reads [2**64 - 1, 3] as float64; redo integers past int64 exactly
        flat = _flatten(data)
        if flat and all(type(x) is int for x in flat):
            info = np.iinfo(target)
            if min(flat) < info.min or max(flat) > info.max:
                raise BadRequest(f"{label}: 'data' has values outside the range of {datatype}")
            return np.array(flat, dtype=target).reshape(shape)
    if parsed.dtype.kind not in _JSON_KINDS[datatype]:
        what = {"b": "booleans", "iu": "integers", "iuf": "numbers"}[_JSON_KINDS[datatype]]
        raise BadRequest(f"{label}: {datatype} 'data' must be {what}")
    if target.kind in "iu":
        info = np.iinfo(target)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise BadRequest(f"{label}: 'data' has values outside the range of {datatype}")
    return parsed.astype(target).reshape(shape)


def _flatten(data: list) -> list:
    flat: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


# --- responses ---------------------------------------------------------------------------


def decode_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """The outputs of an infer response (a server's answer, e.g. Triton's), name → array;
    BadRequest when the body does not hold what its JSON header lists."""
    view = memoryview(body)
    n = len(view) if header_length is None else header_length
    try:
        header = json.loads(bytes(view[:n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"malformed JSON in response: {e}") from None
    raw_outputs = header.get("outputs") if isinstance(header, dict) else None
    if not isinstance(raw_outputs, list):
        raise BadRequest("response has no 'outputs' list")
    outputs: dict[str, np.ndarray] = {}
    offset = n
    for i, raw in enumerate(raw_outputs):
        name, datatype, shape, params = _tensor_header(raw, f"outputs[{i}]", "output")
        size = params.get("binary_data_size")
        if size is None:
            outputs[name] = _from_json(raw.get("data", []), datatype, shape, f"output '{name}'")
            continue
        outputs[name] = from_binary(
            view[offset : offset + size], datatype, shape, f"output '{name}'"
        )
        offset += size
    return outputs


def encode_request(inputs: Mapping[str, np.ndarray]) -> tuple[bytes, list[bytes]]:
    """A KServe v2 infer request with every input as binary data and every output asked for
    as binary: its JSON header and the inputs' raw bytes, to send one after the other."""
    tensors, raws = [], []
    for name, array in inputs.items():
        datatype = triton_datatype(array.dtype)
        raw = to_binary(array, datatype)
        tensors.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        raws.append(raw)
    head = {"inputs": tensors, "parameters": {"binary_data_output": True}}
    return json.dumps(head, separators=(",", ":")).encode(), raws


def encode_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
    id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra HTTP headers (Content-Type, and the JSON header
    length when any output is binary), giving the outputs the request asked for."""
    names = list(outputs) if request.requested_outputs is None else request.requested_outputs
    response_id = request.id if id is None else id
    header: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if response_id is not None:
        header["id"] = response_id
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in names:
        if name not in outputs:
            raise BadRequest(f"output '{name}': the model did not produce it")
        array = np.asarray(outputs[name])
        datatype = triton_datatype(array.dtype)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.wants_binary(name):
            raw = to_binary(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = _to_json(array, datatype, name)
        tensors.append(tensor)
    header["outputs"] = tensors
    head = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *chunks]), {
        "Content-Type": "application/octet-stream",
        INFERENCE_HEADER: str(len(head)),
    }


def _bytes_elements(array: np.ndarray) -> list[bytes]:
    out = []
    for x in array.reshape(-1).tolist():
        if isinstance(x, bytes):
            out.append(x)
        elif isinstance(x, str):
            out.append(x.encode())
        else:
            out.append(str(x).encode())
    return out


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's binary form: raw little-endian values, or length-prefixed BYTES elements."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in _bytes_elements(array))
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


def _to_json(array: np.ndarray, datatype: str, name: str) -> list:
    if datatype == "BYTES":
        try:
            return [b.decode() for b in _bytes_elements(array)]
        except UnicodeDecodeError:
            raise BadRequest(
                f"output '{name}': BYTES data is not UTF-8; request it with binary_data"
            ) from None
    if datatype == "BF16":
        array = array.astype(np.float32)
    return array.reshape(-1).tolist()
