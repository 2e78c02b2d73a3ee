"""Shared prefixes of ONNX models: what Nexus's prefix batching runs once for many models
(Shen et al., SOSP 2019, §5 "prefix batching"; Nexus has them declared, tnx finds them).

A tensor is named by what computes it, not by what it is called. From the graph's
inputs forward, in topological order:
- a graph input hashes its position, element type and per-sample shape;
- a weight (an initializer, or a Constant node's value) hashes its type, shape and
  *contents*, so equal weights under other names match and other weights do not;
- a node's output hashes its operator, domain, attributes and its inputs' hashes.
Two models share a node where that hash is in both; since a hash covers everything
upstream, the shared nodes are closed under "computed from", a prefix. Nodes that
read no graph input (shape constants and the like) are not the prefix: whichever
part needs them keeps its own copy.

Groups are formed greedily (`groups`): two groups merge where the merged group saves
more bytes of weights (its shared bytes x (members − 1)) than the two apart, ties
broken by FLOPs; so a model that shares only a first layer with a group does not
shrink the group's prefix to that layer. The cut of a group is the set of shared
tensors that some member reads outside the prefix, or returns.
Splitting into models is `exporters.prefix_split`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tnx.errors import UserInputError


def _h(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _tensor_hash(t: Any) -> str:
    from onnx import numpy_helper

    array = numpy_helper.to_array(t)
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    return _h("weight", int(t.data_type), tuple(array.shape), digest)


def _attr_hash(a: Any) -> tuple:
    from onnx import AttributeProto

    if a.type == AttributeProto.TENSOR:
        return (a.name, "t", _tensor_hash(a.t))
    if a.type == AttributeProto.TENSORS:
        return (a.name, "ts", tuple(_tensor_hash(t) for t in a.tensors))
    if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        # Subgraphs (If, Loop) by their serialization: names count there, which can
        # only make two models share less, never wrongly more.
        g = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
        return (a.name, "g", tuple(hashlib.sha256(x.SerializeToString()).hexdigest() for x in g))
    from onnx import helper

    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        value = value.hex()
    elif isinstance(value, list):
        value = tuple(v.hex() if isinstance(v, bytes) else v for v in value)
    return (a.name, int(a.type), value)


def _dims(vi: Any) -> tuple[int | str, ...]:
    shape = vi.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") else "?" for d in shape.dim)


@dataclass(slots=True)
class Graph:
    """One model, its tensors hashed: `hash_of[name]`, and per node (in graph order) the
    hash of its first output, which names the node."""

    name: str
    path: Path
    model: Any  # onnx.ModelProto, shapes inferred
    hash_of: dict[str, str] = field(default_factory=dict)
    node_hash: list[str] = field(default_factory=list)
    live: set[str] = field(default_factory=set)  # hashes of nodes that read a graph input
    weights: dict[str, int] = field(default_factory=dict)  # weight hash -> bytes
    node_weights: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node -> weights
    node_flops: dict[str, int] = field(default_factory=dict)  # node -> FLOPs per sample

    @property
    def total_bytes(self) -> int:
        return sum(self.weights.values())

    @property
    def total_flops(self) -> int:
        return sum(self.node_flops.values())

    def name_of(self, tensor_hash: str) -> str:
        for name, h in self.hash_of.items():
            if h == tensor_hash:
                return name
        raise KeyError(tensor_hash)


def load_graph(path: Path, name: str | None = None) -> Graph:
    """Read and hash an ONNX model; UserInputError naming the file when it cannot be read."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as err:
        raise UserInputError(f"{path}: not a readable ONNX model: {err}") from None
    return hash_graph(model, name or path.stem, path)


def hash_graph(model: Any, name: str, path: Path = Path("-")) -> Graph:
    g = Graph(name, path, model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    shapes = {vi.name: _dims(vi) for vi in itertools.chain(graph.input, graph.value_info)}
    shapes.update({vi.name: _dims(vi) for vi in graph.output})
    shapes.update({t.name: tuple(t.dims) for t in inits.values()})
    for t in inits.values():
        h = g.hash_of[t.name] = _tensor_hash(t)
        g.weights[h] = _nbytes(t)
    position = 0
    live_tensors: set[str] = set()
    for vi in graph.input:
        if vi.name in inits:
            continue
        elem = vi.type.tensor_type.elem_type
        g.hash_of[vi.name] = _h("input", position, elem, _dims(vi)[1:])
        live_tensors.add(vi.name)
        position += 1
    for node in graph.node:
        attrs = tuple(sorted(_attr_hash(a) for a in node.attribute))
        ins = tuple(g.hash_of.get(i, _h("missing", i)) if i else "" for i in node.input)
        nh = _h("node", node.op_type, node.domain, attrs, ins)
        for k, out in enumerate(node.output):
            if out:
                g.hash_of[out] = nh if k == 0 else _h(nh, k)
        g.node_hash.append(nh)
        used = [g.hash_of[i] for i in node.input if i in inits]
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    g.weights[nh] = _nbytes(a.t)
        else:
            used += [
                g.hash_of[i]
                for i in node.input
                if i and i not in live_tensors and g.hash_of.get(i) in g.weights
            ]
        g.node_weights[nh] = tuple(dict.fromkeys(used))
        if any(i in live_tensors for i in node.input):
            g.live.add(nh)
            live_tensors.update(o for o in node.output if o)
        g.node_flops[nh] = node_flops(node, shapes)
    return g


def _nbytes(t: Any) -> int:
    from onnx import numpy_helper

    return int(numpy_helper.to_array(t).nbytes)


def node_flops(node: Any, shapes: dict[str, tuple[int | str, ...]]) -> int:
    """Multiply-adds x 2 per sample of Conv, Gemm and MatMul (other operators: 0).
    Shapes from shape inference (activations with their batch axis, which is dropped;
    unknown dims count as 1)."""

    def per_sample(name: str) -> list[int] | None:
        dims = shapes.get(name)
        if dims is None:
            return None
        return [d if isinstance(d, int) and d > 0 else 1 for d in dims[1:]]

    out = per_sample(node.output[0]) if node.output else None
    if out is None:
        return 0
    n_out = 1
    for d in out:
        n_out *= d
    if node.op_type == "Conv" and len(node.input) > 1:
        w = shapes.get(node.input[1])  # a weight: (C_out, C_in / group, k…), no batch axis
        if w is None:
            return 0
        k = 1
        for d in w[1:]:
            k *= d if isinstance(d, int) else 1
        return 2 * n_out * k
    if node.op_type in ("Gemm", "MatMul"):
        a = shapes.get(node.input[0])
        if not a:
            return 0
        trans_a = any(x.name == "transA" and x.i for x in node.attribute)
        k = a[0] if trans_a and len(a) == 2 else a[-1]
        return 2 * n_out * (k if isinstance(k, int) and k > 0 else 1)
    return 0


@dataclass(slots=True, frozen=True)
class PrefixGroup:
    """Models sharing a prefix: its nodes (by hash), the cut tensors (by hash, in the
    first member's graph order), and what it holds."""

    models: tuple[str, ...]
    nodes: frozenset[str]
    cut: tuple[str, ...]
    weight_bytes: int
    flops: int  # per sample

    @property
    def shares(self) -> bool:
        return len(self.models) > 1 and bool(self.nodes)


def common_nodes(graphs: Sequence[Graph]) -> frozenset[str]:
    """The hashes of the nodes every graph has and that read a graph input: the prefix."""
    if not graphs:
        return frozenset()
    common = set(graphs[0].live)
    for g in graphs[1:]:
        common &= g.live
    return frozenset(common)


def prefix_of(graphs: Sequence[Graph]) -> PrefixGroup:
    """The longest common prefix of `graphs`, with its cut, weights and FLOPs."""
    nodes = common_nodes(graphs)
    first = graphs[0]
    weights = {w for n in nodes for w in first.node_weights.get(n, ())}
    cut: dict[str, None] = {}
    if nodes and len(graphs) > 1:
        for g in graphs:
            inside = {h for n, h in zip(g.model.graph.node, g.node_hash, strict=True) if h in nodes}
            produced = {
                g.hash_of[o]
                for n, h in zip(g.model.graph.node, g.node_hash, strict=True)
                if h in inside
                for o in n.output
                if o
            }
            for n, h in zip(g.model.graph.node, g.node_hash, strict=True):
                if h not in inside:
                    cut.update(
                        (g.hash_of[i], None) for i in n.input if g.hash_of.get(i) in produced
                    )
            cut.update(
                (g.hash_of[o.name], None)
                for o in g.model.graph.output
                if g.hash_of.get(o.name) in produced
            )
        order = {h: k for k, h in enumerate(first.hash_of.values())}
        cut = dict.fromkeys(sorted(cut, key=lambda h: order.get(h, 0)))
    return PrefixGroup(
        models=tuple(g.name for g in graphs),
        nodes=nodes,
        cut=tuple(cut),
        weight_bytes=sum(first.weights[w] for w in weights),
        flops=sum(first.node_flops.get(n, 0) for n in nodes),
    )


def _saved(graphs: Sequence[Graph]) -> tuple[int, int]:
    if len(graphs) < 2:
        return 0, 0
    p = prefix_of(graphs)
    return p.weight_bytes * (len(graphs) - 1), p.flops * (len(graphs) - 1)


def groups(graphs: Iterable[Graph]) -> list[PrefixGroup]:
    """Greedy grouping: merge the two groups whose merge saves the most weight bytes
    (then FLOPs) over keeping them apart, until no merge saves anything. Every model is
    in exactly one group; a group of one shares nothing."""
    parts = [[g] for g in graphs]
    names = [g.name for p in parts for g in p]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise UserInputError(f"model name {dup!r} given twice")
    saved = [_saved(p) for p in parts]
    while True:
        best: tuple[tuple[int, int], int, int, tuple[int, int]] | None = None
        for i, j in itertools.combinations(range(len(parts)), 2):
            merged = _saved(parts[i] + parts[j])
            gain = (
                merged[0] - saved[i][0] - saved[j][0],
                merged[1] - saved[i][1] - saved[j][1],
            )
            if gain > (0, 0) and gain[0] >= 0 and (best is None or gain > best[0]):
                best = (gain, i, j, merged)
        if best is None:
            break
        _, i, j, merged = best
        parts[i] = parts[i] + parts[j]
        saved[i] = merged
        del parts[j], saved[j]
    return [prefix_of(p) for p in parts]


def describe(group: PrefixGroup, graphs: dict[str, Graph]) -> list[str]:
    """The report lines of `tnx prefix scan` for one group."""
    if not group.shares:
        return [f"{group.models[0]}: shares nothing with the others"]
    first = graphs[group.models[0]]
    lines = [f"group: {', '.join(group.models)}"]
    for k, h in enumerate(group.cut):
        names = ", ".join(f"{m}:{graphs[m].name_of(h)}" for m in group.models)
        lines.append(f"  cut shared_{k}  ({names})")
    pct_b = 100.0 * group.weight_bytes / max(first.total_bytes, 1)
    pct_f = 100.0 * group.flops / max(first.total_flops, 1)
    lines.append(
        f"  shared: {len(group.nodes)} nodes, {group.weight_bytes / 1e6:.3f} MB of weights "
        f"({pct_b:.1f} % of {first.name}), {group.flops / 1e6:.3f} MFLOP per sample "
        f"({pct_f:.1f} %); stored once saves "
        f"{group.weight_bytes * (len(group.models) - 1) / 1e6:.3f} MB"
    )
    return lines
