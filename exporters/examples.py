"""Example models shipped with tnx: small, random weights, nothing downloaded.

`backbone_classifier` and `backbone_embedder` share one backbone (same layers,
same seeded weights) and differ only in their heads, so prefix batching has a
real shared prefix to find. `tiny_mlp` is a model of another shape. `convnet64` is
heavy enough on a CPU (a batch of 8 takes about a hundred milliseconds on one
core) that servers, not clients, are the limit in the router benchmark.
"""

from __future__ import annotations

from typing import Any

INPUT_SHAPES = {
    "backbone_classifier": (3, 32, 32),
    "backbone_embedder": (3, 32, 32),
    "tiny_mlp": (64,),
    "convnet64": (3, 64, 64),
}


def _modules() -> Any:
    import torch
    from torch import nn

    class Backbone(nn.Module):
        def __init__(self, width: int = 32) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.GELU(),
                nn.Conv2d(width, width * 2, 3, stride=2, padding=1),
                nn.BatchNorm2d(width * 2),
                nn.GELU(),
                nn.Conv2d(width * 2, width * 2, 3, stride=2, padding=1),
                nn.GELU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.out_features = width * 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    class WithHead(nn.Module):
        def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x))

    return torch, nn, Backbone, WithHead


def _seeded_backbone() -> Any:
    torch, _, Backbone, _ = _modules()
    torch.manual_seed(0)  # the same backbone weights in both models
    return Backbone()


def backbone_classifier() -> Any:
    torch, nn, _, WithHead = _modules()
    backbone = _seeded_backbone()
    torch.manual_seed(1)
    return WithHead(backbone, nn.Linear(backbone.out_features, 10)).eval()


def backbone_embedder() -> Any:
    torch, nn, _, WithHead = _modules()
    backbone = _seeded_backbone()
    torch.manual_seed(2)
    head = nn.Sequential(nn.Linear(backbone.out_features, 128), nn.LayerNorm(128))
    return WithHead(backbone, head).eval()


def tiny_mlp() -> Any:
    torch, nn, _, _ = _modules()
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 16)
    ).eval()


def convnet64() -> Any:
    torch, nn, _, _ = _modules()
    torch.manual_seed(4)

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 64, 1),
        *block(64, 128, 2),
        *block(128, 128, 1),
        *block(128, 128, 1),
        *block(128, 256, 2),
        *block(256, 256, 1),
        *block(256, 256, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(256, 10),
    ).eval()


EXAMPLES = {
    "backbone_classifier": "exporters.examples:backbone_classifier",
    "backbone_embedder": "exporters.examples:backbone_embedder",
    "tiny_mlp": "exporters.examples:tiny_mlp",
    "convnet64": "exporters.examples:convnet64",
}
