"""config.pbtxt generation and repository validation (pure, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from model_repo_tools.check import check_repository
from model_repo_tools.config import build_config, parse_pbtxt, to_override_json, to_pbtxt
from model_repo_tools.onnx_io import TensorInfo, read_io
from model_repo_tools.repository import add_model
from tnx.errors import RepositoryError

X = TensorInfo("input", "TYPE_FP32", (-1, 3, 8, 8))
Y = TensorInfo("output", "TYPE_FP32", (-1, 10))


def test_python_backend_config_round_trips_through_protobuf_text() -> None:
    cfg = build_config("m", "python", [X], [Y], max_batch_size=32)
    parsed = parse_pbtxt_text(to_pbtxt(cfg))
    assert parsed == cfg
    assert parsed.backend == "python"
    assert list(parsed.input[0].dims) == [3, 8, 8]  # batch axis is implicit
    assert parsed.input[0].data_type == mc.TYPE_FP32
    assert parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert parsed.parameters["onnx_file"].string_value == "model.onnx"
    assert not parsed.HasField("dynamic_batching")


def parse_pbtxt_text(text: str) -> mc.ModelConfig:
    from google.protobuf import text_format

    return text_format.Parse(text, mc.ModelConfig())


def test_platform_configs_for_triton_container_backends() -> None:
    ort = build_config("m", "onnxruntime", [X], [Y], 8, instance_kind="gpu", gpus=[1])
    assert ort.platform == "onnxruntime_onnx"
    assert ort.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert list(ort.instance_group[0].gpus) == [1]
    trt = build_config("m", "tensorrt", [X], [Y], 8, dynamic_batching=True)
    assert trt.platform == "tensorrt_plan"
    assert trt.HasField("dynamic_batching")
    unbatched = build_config("m", "onnxruntime", [X], [Y], 0)
    assert list(unbatched.input[0].dims) == [-1, 3, 8, 8]


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(RepositoryError, match="unknown backend"):
        build_config("m", "tflite", [X], [Y], 8)  # type: ignore[arg-type]


def test_override_json_uses_proto_field_names_and_parses_back() -> None:
    cfg = build_config("m", "python", [X], [Y], 16, instance_count=2)
    text = to_override_json(cfg)
    assert '"max_batch_size": 16' in text and "maxBatchSize" not in text
    back = json_format.Parse(text, mc.ModelConfig())
    assert back == cfg


def test_add_model_reads_io_from_onnx(exported, tmp_path: Path) -> None:
    folder = add_model(exported.custom_onnx, tmp_path, backend="python", max_batch=32, name="s")
    cfg = parse_pbtxt(folder / "config.pbtxt")
    inputs, outputs = read_io(exported.custom_onnx)
    assert cfg.name == "s" and cfg.max_batch_size == 32
    assert [i.name for i in cfg.input] == [t.name for t in inputs]
    assert list(cfg.input[0].dims) == [4, 24]
    assert list(cfg.output[0].dims) == [6]
    assert (folder / "1" / "model.py").is_file() and (folder / "1" / "model.onnx").is_file()
    assert check_repository(tmp_path) == []


def test_tensorrt_backend_needs_a_plan(exported, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no TensorRT plan"):
        add_model(exported.custom_onnx, tmp_path, backend="tensorrt")


def test_check_reports_each_problem_with_the_model_name(exported, tmp_path: Path) -> None:
    add_model(exported.custom_onnx, tmp_path, name="good")
    add_model(exported.custom_onnx, tmp_path, name="malformed")
    add_model(exported.custom_onnx, tmp_path, name="wrongdims")
    add_model(exported.custom_onnx, tmp_path, name="nofile")
    cfg = (tmp_path / "malformed" / "config.pbtxt").read_text()
    (tmp_path / "malformed" / "config.pbtxt").write_text(
        cfg.replace("max_batch_size: 64", "max_batch_size: sixty-four")
    )
    cfg = (tmp_path / "wrongdims" / "config.pbtxt").read_text()
    (tmp_path / "wrongdims" / "config.pbtxt").write_text(cfg.replace("dims: 24", "dims: 25", 1))
    (tmp_path / "nofile" / "1" / "model.onnx").unlink()
    problems = {p.model: p.message for p in check_repository(tmp_path)}
    assert set(problems) == {"malformed", "wrongdims", "nofile"}
    assert "max_batch_size" in problems["malformed"]
    assert "dims [4, 25]" in problems["wrongdims"] and "[4, 24]" in problems["wrongdims"]
    assert "missing model.onnx" in problems["nofile"]


def test_check_rejects_an_unknown_field(exported, tmp_path: Path) -> None:
    folder = add_model(exported.custom_onnx, tmp_path, name="m")
    (folder / "config.pbtxt").write_text((folder / "config.pbtxt").read_text() + "\nmax_batch: 4\n")
    [problem] = check_repository(tmp_path)
    assert problem.model == "m" and "max_batch" in problem.message


def test_gpu_memory_readings() -> None:
    from model_repo_tools.profiler import parse_gpu_metrics

    live = (
        "# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes\n"
        "# TYPE nv_gpu_memory_total_bytes gauge\n"
        'nv_gpu_memory_total_bytes{gpu_uuid="a"} 1e9\n'
        'nv_gpu_memory_total_bytes{gpu_uuid="b"} 1e9\n'
        "# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes\n"
        "# TYPE nv_gpu_memory_used_bytes gauge\n"
        'nv_gpu_memory_used_bytes{gpu_uuid="a"} 5e8\n'
        'nv_gpu_memory_used_bytes{gpu_uuid="b"} 1e8\n'
        'nv_inference_count{model="m",version="1"} 12\n'
    )
    assert parse_gpu_metrics(live) == 600_000_000
    assert parse_gpu_metrics("nv_gpu_memory_used_bytes{") is None
    dead = 'nv_gpu_memory_total_bytes{gpu_uuid="a"} 0\nnv_gpu_memory_used_bytes{gpu_uuid="a"} 0\n'
    assert parse_gpu_metrics(dead) is None


def test_onnx_element_types_in_triton_terms() -> None:
    from onnx import TensorProto

    from model_repo_tools.onnx_io import triton_type

    assert triton_type(TensorProto.FLOAT) == "TYPE_FP32"
    assert triton_type(TensorProto.INT64) == "TYPE_INT64"
    assert triton_type(TensorProto.STRING) == "TYPE_STRING"
    assert triton_type(TensorProto.BFLOAT16) == "TYPE_BF16"
    assert triton_type(TensorProto.FLOAT8E4M3FN) is None
    assert triton_type(TensorProto.UNDEFINED) is None
