"""Model-schema checks of an infer request: its inputs' names, datatypes and shapes against
the model's metadata (Triton's `GET /v2/models/{m}` and the config's `max_batch_size`).

The wire codec (`router.kserve`) decodes any well-formed body; this module says
whether it fits the model, with `BadRequest` naming the tensor when it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from router.datatypes import triton_datatype
from router.kserve import BadRequest, InferRequest
from tnx.errors import ServerError


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model tensor: dims exclude the batch axis when `batched`; -1 is a variable dim."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    batched: bool = False

    def expected_shape(self) -> list[int]:
        return [-1, *self.dims] if self.batched else list(self.dims)


def specs_from_metadata(
    metadata: Mapping[str, Any], max_batch_size: int
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) from Triton's ``GET /v2/models/{m}`` JSON and the config's
    max_batch_size; with max_batch_size > 0 the metadata shapes lead with the -1 batch dim."""
    batched = max_batch_size > 0
    model = metadata.get("name", "?")
    result: tuple[list[TensorSpec], list[TensorSpec]] = ([], [])
    for kind, specs in zip(("inputs", "outputs"), result, strict=True):
        for tensor in metadata.get(kind, []):
            shape = [int(d) for d in tensor["shape"]]
            if batched:
                if not shape or shape[0] != -1:
                    raise ServerError(
                        f"model '{model}' {kind[:-1]} '{tensor['name']}': metadata shape "
                        f"{shape} lacks the leading -1 batch dimension of max_batch_size "
                        f"{max_batch_size}"
                    )
                shape = shape[1:]
            specs.append(TensorSpec(tensor["name"], tensor["datatype"], tuple(shape), batched))
    return result


def validate_inputs(
    req: InferRequest,
    expected: list[TensorSpec],
    *,
    outputs: Iterable[str] | None = None,
    max_batch_size: int = 0,
) -> int | None:
    """Check the request's inputs (and requested outputs, given the model's output names)
    against the model; return the batch size of a batched model, else None."""
    specs = {s.name: s for s in expected}
    for name in req.inputs:
        if name not in specs:
            raise BadRequest(
                f"input '{name}': unknown input (the model takes {', '.join(specs) or 'none'})"
            )
    batch: int | None = None
    batch_from = ""
    for spec in expected:
        if spec.name not in req.inputs:
            raise BadRequest(
                f"input '{spec.name}': missing ({spec.datatype} {spec.expected_shape()})"
            )
        array = req.inputs[spec.name]
        datatype = req.input_datatypes.get(spec.name) or triton_datatype(array.dtype)
        if datatype != spec.datatype:
            raise BadRequest(
                f"input '{spec.name}': datatype {datatype} does not match the model's "
                f"{spec.datatype}"
            )
        shape = list(array.shape)
        want = spec.expected_shape()
        if len(shape) != len(want) or any(
            w != -1 and w != s for s, w in zip(shape, want, strict=True)
        ):
            raise BadRequest(f"input '{spec.name}': shape {shape} does not match {want}")
        if spec.batched:
            if shape[0] < 1:
                raise BadRequest(f"input '{spec.name}': batch size must be at least 1")
            if 0 < max_batch_size < shape[0]:
                raise BadRequest(
                    f"input '{spec.name}': batch size {shape[0]} exceeds the model's "
                    f"max_batch_size {max_batch_size}"
                )
            if batch is None:
                batch, batch_from = shape[0], spec.name
            elif shape[0] != batch:
                raise BadRequest(
                    f"input '{spec.name}': batch size {shape[0]} differs from input "
                    f"'{batch_from}' ({batch})"
                )
    if outputs is not None and req.requested_outputs is not None:
        known = list(outputs)
        for name in req.requested_outputs:
            if name not in known:
                raise BadRequest(
                    f"output '{name}': unknown output (the model gives {', '.join(known)})"
                )
    return batch
