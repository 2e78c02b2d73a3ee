"""router.kserve against tritonclient.http's own request encoder and response parser."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import serialize_byte_tensor

from router.datatypes import numpy_dtype, triton_datatype
from router.http_errors import error_body
from router.kserve import (
    INFERENCE_HEADER,
    BadRequest,
    decode_request,
    encode_response,
    parse_header_length,
)
from router.model_schema import TensorSpec, validate_inputs
from tnx.errors import UserInputError

Client = httpclient.InferenceServerClient

SAMPLES = {
    "FP32": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "FP16": (np.arange(6, dtype=np.float16).reshape(3, 2) - 2.5),
    "FP64": np.linspace(-1, 1, 4).reshape(4, 1),
    "INT64": np.array([[-(2**62), 0, 2**62 + 5]], dtype=np.int64),
    "INT32": np.array([[-7, 8], [9, 10]], dtype=np.int32),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "UINT8": np.array([[0, 255, 7]], dtype=np.uint8),
    "UINT64": np.array([2**64 - 1, 3], dtype=np.uint64),
    "BOOL": np.array([[True, False], [False, True], [True, True]]),
    "BYTES": np.array([[b"hello", b""], [b"w\xc3\xb6rld", b"x" * 300]], dtype=np.object_),
}


def client_request(arrays, *, binary=True, outputs=None, **kwargs):
    """A body as tritonclient.http builds it: (body, header_length or None)."""
    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(name, list(array.shape), triton_datatype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return Client.generate_request_body(inputs, outputs=outputs, **kwargs)


def parse(body, headers):
    length = headers.get(INFERENCE_HEADER)
    return Client.parse_response_body(body, header_length=None if length is None else int(length))


def assert_same(got, want):
    assert got.shape == want.shape
    if want.dtype == np.object_:
        # tritonclient gives BYTES sent as JSON back as str, binary ones as bytes
        as_bytes = [x.encode() if isinstance(x, str) else x for x in got.reshape(-1).tolist()]
        assert as_bytes == want.reshape(-1).tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_request_round_trip(datatype, binary_in):
    array = SAMPLES[datatype]
    body, length = client_request({"x": array}, binary=binary_in)
    assert (length is not None) == binary_in
    req = decode_request(body, length)
    assert list(req.inputs) == ["x"]
    assert req.input_datatypes == {"x": datatype}
    assert_same(req.inputs["x"], array)


@pytest.mark.parametrize("binary_out", [True, False])
@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_response_round_trip(datatype, binary_out):
    array = SAMPLES[datatype]
    outputs = [httpclient.InferRequestedOutput("y", binary_data=binary_out)]
    req = decode_request(*client_request({"x": array}, outputs=outputs))
    assert req.requested_outputs == ["y"]
    assert req.wants_binary("y") is binary_out
    body, headers = encode_response("m", "1", {"y": array, "unasked": array}, req)
    assert (INFERENCE_HEADER in headers) == binary_out
    assert headers["Content-Type"] == (
        "application/octet-stream" if binary_out else "application/json"
    )
    result = parse(body, headers)
    assert result.as_numpy("unasked") is None
    assert_same(result.as_numpy("y"), array)
    assert result.get_response()["model_name"] == "m"
    assert result.get_response()["model_version"] == "1"


def test_default_outputs_are_all_binary_and_ordered():
    """tritonclient's infer() with no outputs listed asks for every output in binary."""
    a = SAMPLES["FP32"]
    req = decode_request(*client_request({"a": a, "b": SAMPLES["BYTES"]}))
    assert list(req.inputs) == ["a", "b"]
    assert req.requested_outputs is None
    assert req.binary_output_default is True
    outs = {"p": a * 2, "q": SAMPLES["INT64"], "r": SAMPLES["BYTES"]}
    body, headers = encode_response("m", "3", outs, req)
    result = parse(body, headers)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["p", "q", "r"]
    for name, array in outs.items():
        assert_same(result.as_numpy(name), array)


def test_mixed_binary_and_json_inputs_and_outputs():
    a = SAMPLES["INT32"]
    b = SAMPLES["FP16"]
    c = SAMPLES["BYTES"]
    inputs = []
    for name, array, binary in (("a", a, True), ("b", b, False), ("c", c, True)):
        t = httpclient.InferInput(name, list(array.shape), triton_datatype(array.dtype))
        inputs.append(t.set_data_from_numpy(array, binary_data=binary))
    outputs = [
        httpclient.InferRequestedOutput("c", binary_data=False),
        httpclient.InferRequestedOutput("a", binary_data=True),
    ]
    body, length = Client.generate_request_body(
        inputs, outputs=outputs, request_id="req-7", priority=2, parameters={"k": "v"}
    )
    req = decode_request(body, length)
    assert req.id == "req-7"
    assert req.parameters == {"priority": 2, "k": "v"}
    assert req.requested_outputs == ["c", "a"]
    assert req.binary_output == {"c": False, "a": True}
    for name, array in (("a", a), ("b", b), ("c", c)):
        assert_same(req.inputs[name], array)
    body, headers = encode_response("m", "1", dict(req.inputs), req)
    result = parse(body, headers)
    assert result.get_response()["id"] == "req-7"
    assert [o["name"] for o in result.get_response()["outputs"]] == ["c", "a"]
    assert_same(result.as_numpy("a"), a)
    assert_same(result.as_numpy("c"), c)


def test_response_id_override_and_json_is_flat_row_major():
    req = decode_request(*client_request({"x": SAMPLES["INT32"]}, binary=False, request_id="r"))
    outputs = [httpclient.InferRequestedOutput("y", binary_data=False)]
    req = decode_request(*client_request({"x": SAMPLES["INT32"]}, outputs=outputs))
    body, _ = encode_response("m", "1", {"y": np.arange(6).reshape(2, 3)}, req, id="other")
    doc = json.loads(body)
    assert doc["id"] == "other"
    assert doc["outputs"] == [
        {"name": "y", "datatype": "INT64", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}
    ]


def test_zero_size_tensors_and_empty_output_list():
    empty = np.zeros((0, 3), np.float32)
    no_strings = np.empty((0,), dtype=np.object_)
    for binary in (True, False):
        req = decode_request(*client_request({"x": empty, "s": no_strings}, binary=binary))
        assert_same(req.inputs["x"], empty)
        assert req.inputs["s"].shape == (0,)
    body, headers = encode_response("m", "1", {"x": empty, "s": no_strings}, req)
    result = parse(body, headers)
    assert_same(result.as_numpy("x"), empty)
    assert result.as_numpy("s").shape == (0,)
    req = decode_request(_json([{**X_FP32, "data": [1, 2]}], outputs=[]), None)
    assert req.requested_outputs is None


_DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int8, np.uint32, np.bool_]


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from(_DTYPES),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4),
        elements={"allow_nan": False},
    ),
    st.booleans(),
    st.booleans(),
)
def test_round_trip_property(array, binary_in, binary_out):
    outputs = [httpclient.InferRequestedOutput("x", binary_data=binary_out)]
    req = decode_request(*client_request({"x": array}, binary=binary_in, outputs=outputs))
    assert_same(req.inputs["x"], array)
    body, headers = encode_response("m", "1", req.inputs, req)
    assert_same(parse(body, headers).as_numpy("x"), array)


def test_bf16_binary_round_trip():
    array = np.array([[1.5, -2.0], [0.25, 3.0]], dtype=ml_dtypes.bfloat16)
    req = decode_request(*client_request({"x": array}))
    assert_same(req.inputs["x"], array)
    body, headers = encode_response("m", "1", {"y": array}, req)
    assert_same(parse(body, headers).as_numpy("y"), array)


def test_nested_json_data_and_string_outputs():
    doc = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3.5, 4]]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]},
            {"name": "r", "datatype": "INT8", "shape": [3], "data": [[1], [2, 3]]},
        ]
    }
    req = decode_request(json.dumps(doc).encode(), None)
    assert_same(req.inputs["x"], np.array([[1, 2], [3.5, 4]], dtype=np.float32))
    assert req.inputs["s"].tolist() == [b"a", "é".encode()]
    assert_same(req.inputs["r"], np.array([1, 2, 3], dtype=np.int8))
    # numpy str arrays go out as BYTES too
    body, headers = encode_response("m", "1", {"t": np.array(["ab", "c"])}, req)
    # a plain JSON request without binary_data_output gets JSON outputs, which tritonclient
    # turns into str
    assert INFERENCE_HEADER not in headers
    assert parse(body, headers).as_numpy("t").tolist() == ["ab", "c"]


def test_multi_sample_batch_validates_and_returns_batch_size():
    specs = [TensorSpec("x", "FP32", (3, -1), batched=True), TensorSpec("n", "INT64", (1,), True)]
    x = np.zeros((5, 3, 7), np.float32)
    n = np.ones((5, 1), np.int64)
    req = decode_request(*client_request({"x": x, "n": n}))
    assert validate_inputs(req, specs, outputs=["y"], max_batch_size=8) == 5
    body, headers = encode_response("m", "1", {"y": x[:, 0, :]}, req)
    assert parse(body, headers).as_numpy("y").shape == (5, 7)


def test_datatype_helpers():
    assert numpy_dtype("FP16") == np.float16
    assert numpy_dtype("BYTES") == np.object_
    assert triton_datatype(np.dtype(bool)) == "BOOL"
    assert triton_datatype(np.uint16) == "UINT16"
    with pytest.raises(ValueError):
        numpy_dtype("FP8")
    with pytest.raises(ValueError):
        triton_datatype(np.complex64)


def test_parse_header_length():
    assert parse_header_length(None) is None
    assert parse_header_length(" 42") == 42
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length 'x' is not an integer"):
        parse_header_length("x")


def test_error_body():
    assert json.loads(error_body("late", reason="deadline")) == {
        "error": "late",
        "reason": "deadline",
    }


# --- decode errors: each names the tensor (or the header) at fault -----------------------


def _json(inputs, **extra):
    return json.dumps({"inputs": inputs, **extra}).encode()


def _binary(tensor, raw, declared=None):
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + raw, len(head) if declared is None else declared


X_FP32 = {"name": "x", "datatype": "FP32", "shape": [2]}

DECODE_ERRORS = {
    "malformed json": ((b'{"inputs": [', None), "malformed JSON"),
    "not utf-8": ((b"\xff\xfe", None), "malformed JSON"),
    "not an object": ((b"[1]", None), "must be an object"),
    "no inputs": ((b"{}", None), "'inputs'"),
    "unknown datatype": (
        (_json([{"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}]), None),
        "input 'x': unknown datatype 'FP8'",
    ),
    "missing datatype": (
        (_json([{"name": "x", "shape": [1], "data": [1]}]), None),
        "input 'x': missing 'datatype'",
    ),
    "missing shape": (
        (_json([{"name": "x", "datatype": "FP32", "data": [1]}]), None),
        "input 'x': missing 'shape'",
    ),
    "negative shape": (
        (_json([{**X_FP32, "shape": [-1], "data": [1]}]), None),
        "input 'x': shape [-1]",
    ),
    "missing name": ((_json([{"datatype": "FP32", "shape": [1]}]), None), "inputs[0]"),
    "no data": ((_json([X_FP32]), None), "input 'x': has neither 'data'"),
    "data too short": (
        (_json([{**X_FP32, "data": [1.0]}]), None),
        "input 'x': 'data' has 1 elements, shape [2] needs 2",
    ),
    "nested data too long": (
        (_json([{**X_FP32, "data": [[1.0, 2.0], [3.0]]}]), None),
        "input 'x': 'data' has 3 elements",
    ),
    "float for int": (
        (_json([{"name": "i", "datatype": "INT32", "shape": [1], "data": [1.5]}]), None),
        "input 'i': INT32 'data' must be integers",
    ),
    "string for float": (
        (_json([{**X_FP32, "data": ["a", "b"]}]), None),
        "input 'x': FP32 'data' must be numbers",
    ),
    "int out of range": (
        (_json([{"name": "u", "datatype": "UINT8", "shape": [1], "data": [256]}]), None),
        "input 'u': 'data' has values outside the range of UINT8",
    ),
    "number for bool": (
        (_json([{"name": "b", "datatype": "BOOL", "shape": [1], "data": [1]}]), None),
        "input 'b': BOOL 'data' must be booleans",
    ),
    "number for bytes": (
        (_json([{"name": "s", "datatype": "BYTES", "shape": [1], "data": [1]}]), None),
        "input 's': BYTES 'data' must be strings",
    ),
    "duplicate input": (
        (_json([{**X_FP32, "data": [1, 2]}, {**X_FP32, "data": [1, 2]}]), None),
        "input 'x': given more than once",
    ),
    "binary size mismatch": (
        _binary({**X_FP32, "parameters": {"binary_data_size": 4}}, b"\0" * 4),
        "input 'x': binary_data_size is 4 bytes, FP32 shape [2] needs 8",
    ),
    "binary past end": (
        _binary({**X_FP32, "parameters": {"binary_data_size": 8}}, b"\0" * 6),
        "input 'x': binary_data_size 8 runs past the end",
    ),
    "binary without header length": (
        (_binary({**X_FP32, "parameters": {"binary_data_size": 8}}, b"")[0], None),
        "binary inputs need the Inference-Header-Content-Length header",
    ),
    "uint64 out of range": (
        (_json([{"name": "u", "datatype": "UINT64", "shape": [2], "data": [2**64, 1]}]), None),
        "input 'u': 'data' has values outside the range of UINT64",
    ),
    "trailing bytes": (
        _binary({**X_FP32, "parameters": {"binary_data_size": 8}}, b"\0" * 12),
        "4 bytes after the last binary input",
    ),
    "header length beyond body": (
        (b'{"inputs": []}', 99),
        "Inference-Header-Content-Length 99 is beyond the body's 14 bytes",
    ),
    "negative header length": ((b'{"inputs": []}', -1), "is negative"),
    "bad binary size": (
        _binary({**X_FP32, "parameters": {"binary_data_size": "8"}}, b"\0" * 8),
        "input 'x': binary_data_size must be a non-negative integer",
    ),
    "bytes element truncated": (
        _binary(
            {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}},
            b"\x05\0\0\0ab",
        ),
        "input 's': BYTES element 0 claims 5 bytes, only 2 remain",
    ),
    "bytes length truncated": (
        _binary(
            {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 7}},
            b"\x01\0\0\0a\0\0",
        ),
        "input 's': BYTES data ends inside",
    ),
    "bytes count": (
        _binary(
            {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 5}},
            serialize_byte_tensor(np.array([b"a"], dtype=np.object_)).item(),
        ),
        "input 's': binary data holds 1 BYTES elements, shape [2] needs 2",
    ),
    "shared memory": (
        (_json([{**X_FP32, "parameters": {"shared_memory_region": "r"}}]), None),
        "input 'x': shared memory",
    ),
    "classification": (
        (
            _json(
                [{**X_FP32, "data": [1, 2]}],
                outputs=[{"name": "y", "parameters": {"classification": 3}}],
            ),
            None,
        ),
        "output 'y': classification",
    ),
    "duplicate output": (
        (_json([{**X_FP32, "data": [1, 2]}], outputs=[{"name": "y"}, {"name": "y"}]), None),
        "output 'y': requested more than once",
    ),
    "bad binary_data_output": (
        (_json([], parameters={"binary_data_output": "yes"}), None),
        "binary_data_output",
    ),
}


@pytest.mark.parametrize("case", list(DECODE_ERRORS))
def test_decode_errors(case):
    (body, length), message = DECODE_ERRORS[case]
    with pytest.raises(BadRequest) as err:
        decode_request(body, length)
    assert message in str(err.value)
    assert isinstance(err.value, UserInputError)


# --- validation errors -------------------------------------------------------------------

X_OK = np.zeros((2, 3, 4), np.float32)


def test_encode_errors_name_the_output():
    outputs = [httpclient.InferRequestedOutput("y", binary_data=False)]
    req = decode_request(*client_request({"x": X_OK}, outputs=outputs))
    with pytest.raises(BadRequest, match="output 'y': the model did not produce it"):
        encode_response("m", "1", {"z": X_OK}, req)
    bad = np.array([b"\xff"], dtype=np.object_)
    with pytest.raises(BadRequest, match="output 'y': BYTES data is not UTF-8"):
        encode_response("m", "1", {"y": bad}, req)


def test_a_response_decodes_back_to_its_outputs() -> None:
    import numpy as np

    from router import kserve

    outputs = {
        "scores": np.arange(6, dtype=np.float32).reshape(2, 3),
        "labels": np.array([b"cat", b"dog"], dtype=np.object_),
    }
    for binary in (True, False):
        req = kserve.InferRequest(inputs={}, binary_output_default=binary)
        body, headers = kserve.encode_response("m", "1", outputs, req)
        length = headers.get(kserve.INFERENCE_HEADER)
        got = kserve.decode_response(body, None if length is None else int(length))
        np.testing.assert_array_equal(got["scores"], outputs["scores"])
        assert list(got["labels"]) == [b"cat", b"dog"]
