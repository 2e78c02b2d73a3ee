"""Numeric verification of an exported ONNX model against torch, with onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tnx.errors import VerificationError

DEFAULT_BATCHES = (1, 2, 7, 32)
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


@dataclass(slots=True)
class BatchCheck:
    batch: int
    max_abs: float
    max_rel: float
    ok: bool


def verify_onnx(
    model: Any,
    onnx_path: Path,
    sample_shape: tuple[int, ...],
    batches: tuple[int, ...] = DEFAULT_BATCHES,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> list[BatchCheck]:
    """Run torch and onnxruntime on the same random batches; an element passes when
    |onnx − torch| ≤ atol + rtol·|torch| (numpy.allclose's rule)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    checks = []
    for b in batches:
        x = torch.randn(b, *sample_shape, generator=gen)
        with torch.no_grad():
            ref = model(x)
        refs = ref if isinstance(ref, tuple | list) else (ref,)
        got = sess.run(None, {in_name: x.numpy()})
        max_abs = max_rel = 0.0
        ok = True
        for r, g in zip(refs, got, strict=True):
            r = r.detach().numpy()
            if r.shape != g.shape:
                raise VerificationError(
                    f"{onnx_path}: batch {b}: onnx output shape {list(g.shape)} != torch {list(r.shape)}"
                )
            diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
            max_abs = max(max_abs, float(diff.max(initial=0.0)))
            max_rel = max(max_rel, float((diff / np.maximum(np.abs(r), 1e-12)).max(initial=0.0)))
            ok = ok and bool(np.all(diff <= atol + rtol * np.abs(r)))
        checks.append(BatchCheck(b, max_abs, max_rel, ok))
    return checks
