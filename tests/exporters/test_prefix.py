"""Finding and splitting shared prefixes (exporters.prefix, exporters.prefix_split) on small
hand-built ONNX graphs: equal weights under other names match, other weights do not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters.prefix import describe, groups, hash_graph, prefix_of
from exporters.prefix_split import split_group, verify_split
from tnx.errors import UserInputError

RNG = np.random.default_rng(0)
W_CONV = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
B_CONV = RNG.standard_normal(8).astype(np.float32)


def _model(
    tag: str, conv_w: np.ndarray, head_w: np.ndarray, input_name: str = "input"
) -> onnx.ModelProto:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm, weights named after `tag`."""
    inits = [
        numpy_helper.from_array(conv_w, f"{tag}_conv_w"),
        numpy_helper.from_array(B_CONV, f"{tag}_conv_b"),
        numpy_helper.from_array(head_w, f"{tag}_head_w"),
    ]
    nodes = [
        helper.make_node(
            "Conv", [input_name, f"{tag}_conv_w", f"{tag}_conv_b"], [f"{tag}_c"], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", [f"{tag}_c"], [f"{tag}_r"]),
        helper.make_node("GlobalAveragePool", [f"{tag}_r"], [f"{tag}_p"]),
        helper.make_node("Flatten", [f"{tag}_p"], [f"{tag}_f"]),
        helper.make_node("Gemm", [f"{tag}_f", f"{tag}_head_w"], ["output"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        tag,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", head_w.shape[0]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _mlp() -> onnx.ModelProto:
    w = numpy_helper.from_array(RNG.standard_normal((16, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _graphs(**models: onnx.ModelProto) -> dict:
    return {name: hash_graph(m, name) for name, m in models.items()}


def test_equal_weights_under_other_names_share_the_backbone() -> None:
    a = _model("a", W_CONV, RNG.standard_normal((10, 8)).astype(np.float32))
    b = _model("b", W_CONV.copy(), RNG.standard_normal((5, 8)).astype(np.float32))
    gs = _graphs(a=a, b=b)
    p = prefix_of([gs["a"], gs["b"]])
    assert p.shares and len(p.nodes) == 4  # conv, relu, pool, flatten: not the heads
    assert [gs["a"].name_of(h) for h in p.cut] == ["a_f"]
    assert [gs["b"].name_of(h) for h in p.cut] == ["b_f"]
    assert p.weight_bytes == W_CONV.nbytes + B_CONV.nbytes
    assert p.flops == 2 * 8 * 8 * 8 * 27  # the conv: out elements x (3·3·3) x 2
    assert "shared_0" in "\n".join(describe(p, gs))


def test_different_weights_of_the_same_structure_do_not_match() -> None:
    head = RNG.standard_normal((10, 8)).astype(np.float32)
    other = W_CONV + np.float32(1e-3)
    gs = _graphs(a=_model("a", W_CONV, head), b=_model("b", other, head))
    assert not prefix_of([gs["a"], gs["b"]]).shares
    assert [g.models for g in groups(gs.values())] == [("a",), ("b",)]


def test_other_input_names_still_share() -> None:
    head = RNG.standard_normal((10, 8)).astype(np.float32)
    gs = _graphs(a=_model("a", W_CONV, head), b=_model("b", W_CONV, head * 2, input_name="x"))
    assert prefix_of([gs["a"], gs["b"]]).shares


def test_groups_leave_an_unrelated_model_alone_and_the_split_answers_the_same() -> None:
    a = _model("a", W_CONV, RNG.standard_normal((10, 8)).astype(np.float32))
    b = _model("b", W_CONV, RNG.standard_normal((5, 8)).astype(np.float32))
    gs = _graphs(a=a, mlp=_mlp(), b=b)
    found = groups(gs.values())
    assert sorted(g.models for g in found) == [("a", "b"), ("mlp",)]
    (shared,) = [g for g in found if g.shares]
    assert describe(next(g for g in found if not g.shares), gs) == [
        "mlp: shares nothing with the others"
    ]
    split = split_group(shared, gs)
    assert [o.name for o in split.prefix.graph.output] == ["shared_0"]
    for m in ("a", "b"):
        assert [i.name for i in split.suffixes[m].graph.input] == ["shared_0"]
        assert [n.op_type for n in split.suffixes[m].graph.node] == ["Gemm"]
    assert max(verify_split(split, gs).values()) < 1e-6


def test_a_model_that_is_all_prefix_cannot_be_split() -> None:
    head = RNG.standard_normal((10, 8)).astype(np.float32)
    gs = _graphs(a=_model("a", W_CONV, head), b=_model("b", W_CONV, head))
    with pytest.raises(UserInputError, match="computed by the shared prefix"):
        split_group(prefix_of([gs["a"], gs["b"]]), gs)
