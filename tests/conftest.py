"""Shared fixtures: exported example models, a model repository and a real 2-server Triton fleet.

The fleet is session-scoped (starting tritonserver is cheap, exporting models is
not, and `make test` must stay under 15 minutes); its finalizer stops every
process it started, also when a test fails, and a failing test sees the logs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# A model that is not one of the examples: a factory in a plain file, as a user writes one.
CUSTOM_FACTORY = """
import torch
from torch import nn


class Scorer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 5, padding=2)
        self.norm = nn.LayerNorm(16 * 24)
        self.head = nn.Linear(16 * 24, 6)

    def forward(self, x):
        h = torch.tanh(self.conv(x)).flatten(1)
        return torch.softmax(self.head(self.norm(h)), dim=-1)


def make():
    torch.manual_seed(7)
    return Scorer().eval()
"""
CUSTOM_SHAPE = (4, 24)


@dataclass
class Exported:
    folder: Path
    custom_factory: str
    custom_onnx: Path
    mlp_onnx: Path
    backbone_onnx: Path


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("models")
    factory_file = folder / "scorer.py"
    factory_file.write_text(CUSTOM_FACTORY)
    spec = f"{factory_file}:make"
    custom = export_onnx(load_factory(spec), CUSTOM_SHAPE, folder / "scorer.onnx")
    mlp = export_onnx(load_factory("exporters.examples:tiny_mlp"), (64,), folder / "tiny_mlp.onnx")
    backbone = export_onnx(
        load_factory("exporters.examples:backbone_classifier"),
        (3, 32, 32),
        folder / "backbone_classifier.onnx",
    )
    return Exported(folder, spec, custom, mlp, backbone)


@pytest.fixture(scope="session")
def model_repo(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_repo_tools.repository import add_model

    repo = tmp_path_factory.mktemp("repo")
    add_model(exported.custom_onnx, repo, backend="python", max_batch=64)
    add_model(exported.mlp_onnx, repo, backend="python", max_batch=64)
    add_model(exported.backbone_onnx, repo, backend="python", max_batch=64)
    return repo


def fleet_logs(fleet) -> str:
    parts = []
    for g in fleet.gpus:
        with contextlib.suppress(OSError, TypeError):
            tail = Path(g.log).read_text(errors="replace").splitlines()[-30:]
            parts.append(f"--- {g.id} ({g.log}) ---\n" + "\n".join(tail))
    return "\n".join(parts)


@pytest.fixture(scope="session")
def fleet(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Two real tritonserver processes on free loopback ports, stopped at session end."""
    from deploy.fleet import start_fleet, stop_fleet

    fl = start_fleet(2, model_repo, tmp_path_factory.mktemp("fleet"))
    try:
        yield fl
    finally:
        stop_fleet(fl, grace_s=5)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("fleet", "own_fleet"):
            fl = item.funcargs.get(name)
            if fl is not None and hasattr(fl, "gpus"):
                report.sections.append((f"tritonserver logs ({name})", fleet_logs(fl)))


def pytest_configure(config) -> None:
    # Keep onnxruntime and torch from fighting over the two cores with the servers.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def start_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """start_router(plan, fleet, profiles, *extra) → a ready `tnx router serve` process on a
    free port (deploy.services.Service); every one started is stopped at teardown."""
    from deploy.fleet import free_port
    from deploy.services import spawn

    started = []

    def start(plan: Path, fleet: Path, profiles: Path, *extra: str):
        args = [
            "router",
            "serve",
            "--plan",
            str(plan),
            "--fleet",
            str(fleet),
            "--profiles",
            str(profiles),
            *extra,
        ]
        log = tmp_path_factory.mktemp("router") / "router.log"
        started.append(spawn("router", args, free_port(), "/v2/health/ready", log))
        return started[-1]

    try:
        yield start
    finally:
        for service in started:
            service.stop(15)


def _hypothesis_profiles() -> None:
    # CI runs a fixed set of examples (CI=true there): a property test's verdict then
    # depends on the code alone. Locally every run explores new examples.
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profiles()
