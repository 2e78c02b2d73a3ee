"""The Python-backend runner's choice of onnxruntime execution providers (issue 14): pure
logic, tested here without a GPU; the GPU itself is exercised by bench/gpu.sh."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from model_repo_tools.repository import RUNNER
from model_repo_tools.runners import __path__ as RUNNERS


@pytest.fixture(scope="module")
def runner():
    # The runner imports Triton's `triton_python_backend_utils`, which exists only inside
    # the Python stub: an empty stand-in lets its pure function be imported here.
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils"))
    spec = importlib.util.spec_from_file_location("tnx_runner", f"{RUNNERS[0]}/{RUNNER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CPU_ONLY = {"CPUExecutionProvider", "AzureExecutionProvider"}
GPU_BUILD = {"TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"}


def test_a_cpu_instance_runs_on_the_cpu(runner) -> None:
    assert runner.choose_providers("CPU", 0, GPU_BUILD) == (["CPUExecutionProvider"], None)


def test_a_gpu_instance_uses_cuda_on_its_device(runner) -> None:
    providers, why = runner.choose_providers("GPU", 3, GPU_BUILD, tensorrt="off")
    assert why is None
    assert providers == [("CUDAExecutionProvider", {"device_id": 3}), "CPUExecutionProvider"]


def test_tensorrt_comes_first_where_asked_and_present(runner) -> None:
    providers, _ = runner.choose_providers("GPU", 1, GPU_BUILD, tensorrt="on")
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    # auto: only where the tensorrt package is importable (it is not on this machine)
    auto, _ = runner.choose_providers("GPU", 1, GPU_BUILD)
    has_trt = importlib.util.find_spec("tensorrt") is not None
    assert (auto[0][0] == "TensorrtExecutionProvider") == has_trt


def test_a_gpu_instance_without_cuda_falls_back_to_the_cpu_and_says_why(runner) -> None:
    providers, why = runner.choose_providers("GPU", 0, CPU_ONLY)
    assert providers == ["CPUExecutionProvider"]
    assert "no CUDAExecutionProvider" in why and "onnxruntime-gpu" in why


def test_this_machines_onnxruntime_runs_what_is_chosen(runner, tmp_path) -> None:
    """A GPU instance on this machine's onnxruntime (CPU wheel): a session on the chosen
    providers runs, on the CPU, and the reason is given."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    available = set(ort.get_available_providers())
    providers, why = runner.choose_providers("GPU", 0, available)
    session = ort.InferenceSession(str(path), providers=providers)
    out = session.run(["y"], {"x": np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)})[0]
    assert out.tolist() == [[0.0, 2.0, 0.0, 4.0]]
    if "CUDAExecutionProvider" not in available:
        assert session.get_providers() == ["CPUExecutionProvider"] and why
