"""bench.gpu_check's comparison of profiles with torch (pure), and its model spec parsing."""

from __future__ import annotations

import pytest

from bench.gpu_check import _factories, compare_rows
from tnx.errors import UserInputError


def test_rows_compare_the_profile_with_torch_plus_the_measured_overhead() -> None:
    profiled = {"tiny_mlp": {1: 1.5}, "resnet50": {1: 3.0, 8: 9.0}}
    torch_ms = {"tiny_mlp": {1: 0.5}, "resnet50": {1: 2.0, 8: 5.0}}
    overhead, rows = compare_rows(profiled, torch_ms)
    assert overhead == pytest.approx(1.0)  # tiny_mlp: 1.5 served, 0.5 in torch
    by = {(r["model"], r["batch"]): r for r in rows}
    assert by[("resnet50", 1)]["ratio"] == pytest.approx(1.0) and by[("resnet50", 1)]["ok"]
    assert by[("resnet50", 8)]["ratio"] == pytest.approx(1.5) and not by[("resnet50", 8)]["ok"]


def test_the_overhead_probe_is_required() -> None:
    with pytest.raises(UserInputError, match="tiny_mlp at batch 1"):
        compare_rows({"resnet50": {1: 3.0}}, {"resnet50": {1: 2.0}})


def test_model_specs() -> None:
    assert _factories(["r=bench/gpu_models.py:resnet50@3x224x224"]) == {
        "r": ("bench/gpu_models.py:resnet50", (3, 224, 224))
    }
    with pytest.raises(UserInputError, match="NAME=FACTORY@SHAPE"):
        _factories(["resnet50"])
