"""How a query's stage gets its inputs from its parent's outputs, and fan-out (docs/queries.md).

Each input of the child model takes the parent's output of the same name, else the
parent's output at the same position (in the parent model's metadata order). An
output of shape `[*lead, *dims]`, where `dims` is the child input's shape without
its batch axis, yields `prod(lead)` items: the child runs one request of one
sample per item (Nexus counts each fanned-out item as a request of the next
model; the stage's `fanout` in `workload.json` is only the expected count, for
planning). For a root request of n samples and a parent output `[n, 64]` feeding
an input `[64]`, that is n items; `[n, 4, 64]` is 4n. Every input of the child
must give the same `lead`. The child's outputs are stacked back to
`[*lead, *its output dims]`, items in row-major order; zero items give empty
outputs. Pure numpy: the route (`router.query_route`) does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router.datatypes import DTYPES, triton_datatype
from router.model_schema import TensorSpec
from tnx.errors import ContractError


class WiringError(ContractError):
    """A stage's inputs cannot be made from its parent's outputs (the query does not fit its
    models); str(err) names the query, stage and tensors."""


@dataclass(frozen=True, slots=True)
class Items:
    lead: tuple[int, ...]  # the leading axes of the parent's outputs that became items
    items: list[dict[str, np.ndarray]]  # one request's inputs per item, each [1, *dims]


def _fits(dims: Sequence[int], shape: Sequence[int]) -> bool:
    return len(dims) == len(shape) and all(d in (-1, s) for d, s in zip(dims, shape, strict=True))


def stage_items(
    outputs: Mapping[str, np.ndarray],
    output_order: Sequence[str],
    inputs: Sequence[TensorSpec],
    where: str,
) -> Items:
    """The child's requests from the parent's `outputs` (`output_order`: the parent model's
    output names in its metadata order); `where` names the stage in errors."""
    lead: tuple[int, ...] | None = None
    flat: dict[str, np.ndarray] = {}
    for i, spec in enumerate(inputs):
        if spec.name in outputs:
            source = spec.name
        elif i < len(output_order) and output_order[i] in outputs:
            source = output_order[i]
        else:
            raise WiringError(
                f"{where}: input '{spec.name}' has no parent output of its name or at its "
                f"position {i} (the parent gives {', '.join(output_order) or 'none'})"
            )
        array = outputs[source]
        dims = spec.dims
        shape = tuple(array.shape)
        k = len(shape) - len(dims)
        if k < 1 or not _fits(dims, shape[k:]):
            raise WiringError(
                f"{where}: parent output '{source}' of shape {list(shape)} does not end in "
                f"input '{spec.name}''s shape {list(dims)}"
            )
        datatype = triton_datatype(array.dtype)
        if datatype != spec.datatype:
            raise WiringError(
                f"{where}: parent output '{source}' is {datatype}, input '{spec.name}' "
                f"takes {spec.datatype}"
            )
        if lead is None:
            lead = shape[:k]
        elif shape[:k] != lead:
            raise WiringError(
                f"{where}: input '{spec.name}' would give items {list(shape[:k])}, "
                f"another input {list(lead)}"
            )
        flat[spec.name] = array.reshape(math.prod(shape[:k]), *shape[k:])
    if lead is None:
        raise WiringError(f"{where}: the stage's model takes no inputs")
    n = math.prod(lead)
    return Items(lead, [{name: a[j : j + 1] for name, a in flat.items()} for j in range(n)])


def stack(
    lead: tuple[int, ...],
    results: Sequence[Mapping[str, np.ndarray]],
    outputs: Sequence[TensorSpec],
) -> dict[str, np.ndarray]:
    """The child's outputs, name → `[*lead, *dims]`, from its per-item results (each
    `[1, *dims]`); with no items, empty arrays of the outputs' datatypes."""
    out: dict[str, np.ndarray] = {}
    for spec in outputs:
        if results:
            joined = np.concatenate([np.asarray(r[spec.name]) for r in results])
            out[spec.name] = joined.reshape(*lead, *joined.shape[1:])
        else:
            dims = [max(d, 0) for d in spec.dims]
            out[spec.name] = np.zeros((*lead, *dims), dtype=DTYPES[spec.datatype])
    return out
