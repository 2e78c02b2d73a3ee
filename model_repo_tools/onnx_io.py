"""Inputs and outputs of an ONNX graph, in Triton's terms (TYPE_* and dims, -1 for symbolic)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tnx.errors import RepositoryError


def triton_type(elem_type: int) -> str | None:
    """Triton's config data type (TYPE_FP32, …) of an onnx.TensorProto element type; None
    where Triton has none (float8, int4, …). Through numpy: onnx.helper's table, then
    tritonclient.utils's, whose BYTES a model config calls STRING."""
    from onnx.helper import tensor_dtype_to_np_dtype
    from tritonclient.utils import np_to_triton_dtype

    try:
        name = np_to_triton_dtype(tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):  # UNDEFINED, or a number onnx does not know
        return None
    return None if name is None else "TYPE_" + ("STRING" if name == "BYTES" else name)


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
        dtype = triton_type(t.elem_type)
        if dtype is None:
            raise RepositoryError(f"{path}: tensor {v.name!r} has unsupported type {t.elem_type}")
        return TensorInfo(v.name, dtype, dims)

    inputs = [info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [info(v) for v in model.graph.output]
    return inputs, outputs
