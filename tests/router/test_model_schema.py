"""router.model_schema: a decoded request's inputs against the model's metadata."""

from __future__ import annotations

import numpy as np
import pytest

from router.kserve import BadRequest, InferRequest
from router.model_schema import TensorSpec, specs_from_metadata, validate_inputs


def test_specs_from_metadata():
    metadata = {
        "name": "resnet",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}],
    }
    inputs, outputs = specs_from_metadata(metadata, max_batch_size=32)
    assert inputs == [TensorSpec("input", "FP32", (3, 224, 224), batched=True)]
    assert outputs == [TensorSpec("logits", "FP32", (1000,), batched=True)]
    assert inputs[0].expected_shape() == [-1, 3, 224, 224]
    unbatched, _ = specs_from_metadata(metadata, max_batch_size=0)
    assert unbatched == [TensorSpec("input", "FP32", (-1, 3, 224, 224), batched=False)]


SPECS = [TensorSpec("x", "FP32", (-1, 3, 4), batched=False), TensorSpec("n", "INT64", (1,), True)]


def _req(**arrays):
    return InferRequest(arrays)


X_OK = np.zeros((2, 3, 4), np.float32)
N_OK = np.zeros((2, 1), np.int64)

VALIDATE_ERRORS = {
    "unknown input": (
        dict(x=X_OK, n=N_OK, z=N_OK),
        "input 'z': unknown input (the model takes x, n)",
    ),
    "missing input": (dict(x=X_OK), "input 'n': missing (INT64 [-1, 1])"),
    "wrong datatype": (
        dict(x=X_OK.astype(np.float64), n=N_OK),
        "input 'x': datatype FP64 does not match the model's FP32",
    ),
    "wrong shape": (
        dict(x=np.zeros((2, 3, 5), np.float32), n=N_OK),
        "input 'x': shape [2, 3, 5] does not match [-1, 3, 4]",
    ),
    "wrong rank": (
        dict(x=X_OK, n=np.zeros((2,), np.int64)),
        "input 'n': shape [2] does not match [-1, 1]",
    ),
    "empty batch": (dict(x=X_OK, n=np.zeros((0, 1), np.int64)), "input 'n': batch size"),
}


@pytest.mark.parametrize("case", list(VALIDATE_ERRORS))
def test_validate_errors(case):
    arrays, message = VALIDATE_ERRORS[case]
    with pytest.raises(BadRequest) as err:
        validate_inputs(_req(**arrays), SPECS)
    assert message in str(err.value)


def test_validate_batch_limits_and_outputs():
    specs = [TensorSpec("a", "FP32", (2,), True), TensorSpec("b", "FP32", (2,), True)]
    a3, b4 = np.zeros((3, 2), np.float32), np.zeros((4, 2), np.float32)
    with pytest.raises(BadRequest, match="input 'b': batch size 4 differs from input 'a' \\(3\\)"):
        validate_inputs(_req(a=a3, b=b4), specs)
    with pytest.raises(
        BadRequest, match="input 'a': batch size 3 exceeds the model's max_batch_size 2"
    ):
        validate_inputs(_req(a=a3, b=a3), specs, max_batch_size=2)
    req = InferRequest({"a": a3, "b": a3}, requested_outputs=["nope"])
    with pytest.raises(BadRequest, match="output 'nope': unknown output"):
        validate_inputs(req, specs, outputs=["y"])
