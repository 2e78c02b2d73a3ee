"""The models of the query benchmark (`tnx bench queries`) and of the query tests: a two-stage
query whose first stage fans out.

`expand` stands in for a detector: one sample of 64 features in, `FANOUT` items of 64
features out (`[FANOUT, 64]`), each of which the second stage, `tiny_mlp`
(`exporters.examples`), classifies, as Nexus's traffic query recognises each car a
detector found. Random seeded weights, nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXPAND = "expand"
FANOUT = 4
FACTORY = "bench.query_models:expand"


def expand() -> Any:
    import torch
    from torch import nn

    class Expand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 64)
            self.offsets = nn.Parameter(torch.randn(FANOUT, 64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.lin(x).unsqueeze(1) + self.offsets)

    torch.manual_seed(5)
    return Expand().eval()


def export_expand(out: Path) -> Path:
    """expand.onnx (dynamic batch axis, verified against torch) in `out`."""
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx

    return export_onnx(load_factory(FACTORY), (64,), Path(out) / f"{EXPAND}.onnx")
