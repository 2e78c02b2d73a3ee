"""Splitting a prefix group (`exporters.prefix`) into one prefix model and a suffix per member.

The prefix model is extracted from the first member's graph, from its inputs to the
group's cut tensors; each suffix from its own graph, from the cut tensors it reads to
its outputs (`onnx.utils.Extractor`, which carries the weights and local functions each
part needs). The cut tensors are renamed `shared_0`, `shared_1`, … in every part, so a
prefix's outputs are, by name, its suffixes' inputs (a Triton ensemble's mapping, and
the router's path, need no table). `verify_split` runs each original model and its
prefix → suffix path with onnxruntime on the same random batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters.prefix import Graph, PrefixGroup
from tnx.errors import UserInputError, VerificationError

CUT_NAME = "shared_{}"


@dataclass(slots=True)
class Split:
    """A group split: the prefix model, and per member (by name) its suffix model."""

    group: PrefixGroup
    prefix: Any  # onnx.ModelProto
    suffixes: dict[str, Any]


def _rename(model: Any, mapping: dict[str, str]) -> None:
    g = model.graph
    for n in g.node:
        for k, name in enumerate(n.input):
            if name in mapping:
                n.input[k] = mapping[name]
        for k, name in enumerate(n.output):
            if name in mapping:
                n.output[k] = mapping[name]
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.name in mapping:
            vi.name = mapping[vi.name]


def _extract(g: Graph, inputs: list[str], outputs: list[str]) -> Any:
    import onnx
    import onnx.utils

    model = onnx.utils.Extractor(g.model).extract_model(inputs, outputs)
    model.ir_version = g.model.ir_version
    del model.opset_import[:]
    model.opset_import.extend(g.model.opset_import)
    return model


def split_group(group: PrefixGroup, graphs: dict[str, Graph]) -> Split:
    """The prefix and suffix models of `group` (which must share something)."""
    if not group.shares:
        raise UserInputError(f"{group.models[0]}: shares no prefix to split")
    first = graphs[group.models[0]]
    cut_names = {h: CUT_NAME.format(k) for k, h in enumerate(group.cut)}
    inits = {t.name for t in first.model.graph.initializer}
    inputs = [vi.name for vi in first.model.graph.input if vi.name not in inits]
    prefix = _extract(first, inputs, [first.name_of(h) for h in group.cut])
    _rename(prefix, {first.name_of(h): n for h, n in cut_names.items()})
    prefix.graph.name = "prefix"
    suffixes = {}
    for m in group.models:
        g = graphs[m]
        outputs = [o.name for o in g.model.graph.output]
        if any(g.hash_of.get(o) in cut_names for o in outputs):
            raise UserInputError(
                f"{g.path}: an output of {m} is computed by the shared prefix itself; "
                "nothing is left to split off"
            )
        needed = _suffix_inputs(g, group)
        suffix = _extract(g, [g.name_of(h) for h in needed], outputs)
        _rename(suffix, {g.name_of(h): cut_names[h] for h in needed})
        suffix.graph.name = f"{m}_suffix"
        suffixes[m] = suffix
    return Split(group, prefix, suffixes)


def _suffix_inputs(g: Graph, group: PrefixGroup) -> list[str]:
    """The cut tensors (hashes) that `g`'s nodes outside the prefix read."""
    cut = set(group.cut)
    read: dict[str, None] = {}
    for n, h in zip(g.model.graph.node, g.node_hash, strict=True):
        if h not in group.nodes:
            read.update((g.hash_of[i], None) for i in n.input if g.hash_of.get(i) in cut)
    return [h for h in group.cut if h in read]


def verify_split(
    split: Split, graphs: dict[str, Graph], batch: int = 3, seed: int = 0
) -> dict[str, float]:
    """Max |original − prefix→suffix| per member on one random batch; VerificationError
    beyond 1e-5 (both run the same operators on the same weights)."""
    import numpy as np
    import onnxruntime as ort

    def session(model: Any) -> Any:
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(seed)
    prefix = session(split.prefix)
    out: dict[str, float] = {}
    for m, suffix_model in split.suffixes.items():
        g = graphs[m]
        original = session(g.model)
        feeds = {}
        for i in original.get_inputs():
            shape = [batch] + [d if isinstance(d, int) else 1 for d in i.shape[1:]]
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        want = original.run(None, feeds)
        # The prefix reads the first member's input names; inputs match by position.
        pfeeds = {p.name: v for p, v in zip(prefix.get_inputs(), feeds.values(), strict=True)}
        cut = dict(
            zip([o.name for o in prefix.get_outputs()], prefix.run(None, pfeeds), strict=True)
        )
        suffix = session(suffix_model)
        got = suffix.run(None, {i.name: cut[i.name] for i in suffix.get_inputs()})
        err = max(float(np.abs(a - b).max(initial=0.0)) for a, b in zip(want, got, strict=True))
        if err > 1e-5:
            raise VerificationError(f"{g.path}: prefix -> suffix differs from {m} by {err:.3g}")
        out[m] = err
    return out


def save(model: Any, path: Path) -> Path:
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
