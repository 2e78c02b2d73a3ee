"""Inputs and outputs of an ONNX graph, in Triton's terms (TYPE_* and dims, -1 for symbolic)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tnx.errors import RepositoryError

# onnx.TensorProto element types → Triton config data types
ONNX_TO_TRITON = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    data_type: str  # Triton's TYPE_* name
    dims: tuple[int, ...]  # full shape, -1 where symbolic


def read_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise RepositoryError(f"{path}: not a readable ONNX model: {err}") from None
    initializers = {i.name for i in model.graph.initializer}

    def info(v) -> TensorInfo:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        dtype = ONNX_TO_TRITON.get(t.elem_type)
        if dtype is None:
            raise RepositoryError(f"{path}: tensor {v.name!r} has unsupported type {t.elem_type}")
        return TensorInfo(v.name, dtype, dims)

    inputs = [info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [info(v) for v in model.graph.output]
    return inputs, outputs
