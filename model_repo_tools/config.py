"""`config.pbtxt` from Triton's own protobuf (`tritonclient.grpc.model_config_pb2`), never from text templates.

Backends:
- `python`: the embedded server's runner, a Python-backend model that runs the
  ONNX file with onnxruntime (runners/onnx_python_model.py);
- `onnxruntime`: platform `onnxruntime_onnx`, for NVIDIA's Triton container;
- `tensorrt`: platform `tensorrt_plan`, a plan built for the serving GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_repo_tools.onnx_io import TensorInfo
from tnx.errors import RepositoryError

Backend = Literal["python", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = ("python", "onnxruntime", "tensorrt")
MODEL_FILES = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.plan"}
ONNX_FILE = "model.onnx"


def _tensor(cls, t: TensorInfo, batched: bool):
    dims = t.dims[1:] if batched else t.dims
    return cls(name=t.name, data_type=mc.DataType.Value(t.data_type), dims=list(dims))


def build_config(
    name: str,
    backend: Backend,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    max_batch_size: int,
    instance_kind: Literal["cpu", "gpu"] = "cpu",
    instance_count: int = 1,
    gpus: list[int] | None = None,
    dynamic_batching: bool = False,
    intra_op_threads: int = 1,
) -> mc.ModelConfig:
    if backend not in BACKENDS:
        raise RepositoryError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    batched = max_batch_size > 0
    cfg = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    if backend == "python":
        cfg.backend = "python"
        cfg.parameters["onnx_file"].string_value = ONNX_FILE
        cfg.parameters["intra_op_threads"].string_value = str(intra_op_threads)
    elif backend == "onnxruntime":
        cfg.platform = "onnxruntime_onnx"
    else:
        cfg.platform = "tensorrt_plan"
    cfg.input.extend(_tensor(mc.ModelInput, t, batched) for t in inputs)
    cfg.output.extend(_tensor(mc.ModelOutput, t, batched) for t in outputs)
    group = cfg.instance_group.add()
    group.count = instance_count
    group.kind = (
        mc.ModelInstanceGroup.KIND_GPU if instance_kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    )
    if gpus and instance_kind == "gpu":
        group.gpus.extend(gpus)
    if dynamic_batching:
        cfg.dynamic_batching.SetInParent()
    return cfg


def to_pbtxt(cfg: mc.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def to_override_json(cfg: mc.ModelConfig) -> str:
    """The JSON a `load_model(config=…)` override takes (Triton parses it strictly)."""
    return json_format.MessageToJson(cfg, preserving_proto_field_name=True)


def parse_pbtxt(path: Path) -> mc.ModelConfig:
    try:
        return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
    except text_format.ParseError as err:
        raise RepositoryError(f"{path}: {err}") from None
    except OSError as err:
        raise RepositoryError(f"{path}: cannot read ({err.strerror or err})") from None


def dtype_name(value: int) -> str:
    return mc.DataType.Name(value)
