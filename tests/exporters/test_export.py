"""torch → ONNX export and its verification against torch, with real torch and onnxruntime."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.examples import EXAMPLES, INPUT_SHAPES
from exporters.factory import load_factory, parse_shape
from exporters.onnx_export import export_onnx
from exporters.verify import verify_onnx
from model_repo_tools.onnx_io import read_io
from tnx.errors import FactoryError, MissingDependencyError


def test_exported_model_has_a_dynamic_batch_and_matches_torch(exported) -> None:
    inputs, outputs = read_io(exported.custom_onnx)
    assert inputs[0].dims == (-1, 4, 24)
    assert outputs[0].dims == (-1, 6)
    model = load_factory(exported.custom_factory)
    checks = verify_onnx(model, exported.custom_onnx, (4, 24), batches=(1, 7, 32))
    assert [c.batch for c in checks] == [1, 7, 32]
    assert all(c.ok and c.max_abs < 1e-4 for c in checks)


def test_verification_fails_when_the_onnx_differs(exported, tmp_path: Path) -> None:
    import torch

    model = load_factory(exported.custom_factory)
    with torch.no_grad():
        model.head.weight.mul_(3.0)  # the ONNX file still has the old weights
    checks = verify_onnx(model, exported.custom_onnx, (4, 24), batches=(1, 3))
    assert not any(c.ok for c in checks)
    assert min(c.max_abs for c in checks) > 1e-3


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_build(name: str) -> None:
    import torch

    model = load_factory(EXAMPLES[name])
    out = model(torch.randn(3, *INPUT_SHAPES[name]))
    assert out.shape[0] == 3


def test_backbone_examples_share_the_backbone_and_differ_in_heads() -> None:
    a = load_factory(EXAMPLES["backbone_classifier"]).state_dict()
    b = load_factory(EXAMPLES["backbone_embedder"]).state_dict()
    shared = [k for k in a if k.startswith("backbone.")]
    assert shared and all((a[k] == b[k]).all() for k in shared)
    assert {k for k in a if k.startswith("head.")} != {k for k in b if k.startswith("head.")}


def test_factory_errors_name_the_factory(tmp_path: Path) -> None:
    with pytest.raises(FactoryError, match="no such file"):
        load_factory(f"{tmp_path}/missing.py:make")
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(FactoryError, match="import failed: RuntimeError: boom"):
        load_factory(f"{bad}:make")
    notmod = tmp_path / "notmod.py"
    notmod.write_text("def make():\n    return 42\n")
    with pytest.raises(FactoryError, match="returned int, not a torch.nn.Module"):
        load_factory(f"{notmod}:make")
    with pytest.raises(FactoryError, match="no callable 'other'"):
        load_factory(f"{notmod}:other")
    with pytest.raises(FactoryError, match="expected"):
        load_factory("no_colon_here")
    with pytest.raises(FactoryError, match="import failed"):
        load_factory("no_such_package_xyz.mod:make")


def test_export_of_a_model_that_fails_on_the_shape(tmp_path: Path) -> None:
    model = load_factory("exporters.examples:tiny_mlp")
    with pytest.raises(FactoryError, match="fails on input"):
        export_onnx(model, (65,), tmp_path / "x.onnx")


def test_parse_shape() -> None:
    assert parse_shape("3x224x224") == (3, 224, 224)
    assert parse_shape("64") == (64,)
    for bad in ("3xax2", "0x3", ""):
        with pytest.raises(FactoryError):
            parse_shape(bad)


def test_tensorrt_says_what_is_missing() -> None:
    from exporters.tensorrt import build_plan, tensorrt_missing

    why = tensorrt_missing()
    if why is None:
        pytest.skip("TensorRT and a GPU are present here")
    with pytest.raises(MissingDependencyError, match="cannot build a TensorRT plan"):
        build_plan(Path("x.onnx"), Path("x.plan"), (3,))
