"""Triton's tensor datatype names and the numpy dtypes they travel as (KServe v2 "Tensor
Data Types"; Triton's `model_config.proto` spells the same types `TYPE_FP32`, ...).

Binary tensors are little-endian, so every numeric dtype here is. Not
`tritonclient.utils.triton_to_np_dtype`: it reads BF16 as float32, 4 bytes an
element where the wire carries 2; here BF16 is `ml_dtypes.bfloat16`.
"""

from __future__ import annotations

import numpy as np

# Triton datatype name -> numpy dtype, in the protocol's order (error messages list it).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
try:  # BF16 needs ml_dtypes, which tritonclient itself depends on
    import ml_dtypes

    DTYPES["BF16"] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    pass

DATATYPES: frozenset[str] = frozenset(DTYPES)
_NAMES = {dt: name for name, dt in DTYPES.items() if name != "BYTES"}


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype for a Triton datatype name ("FP32" -> float32); BYTES is object."""
    try:
        return DTYPES[datatype]
    except KeyError:
        raise ValueError(f"unknown datatype {datatype!r}") from None


def triton_datatype(dtype: np.dtype | type) -> str:
    """The Triton datatype name for a numpy dtype; str, bytes and object arrays are BYTES."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _NAMES[dt]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no Triton datatype") from None
