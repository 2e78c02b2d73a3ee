"""A router on one small model, for the tests of the routes beside inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_repo_tools.triton_client import TritonServer

MODEL = "tiny_mlp"
SLO_MS = 200.0
TIGHT_SLO_MS = 1.0  # below l(1): every request to this session is dropped at once
PROFILED_MAX = 32  # the profile's largest batch, below the repository's max_batch_size 64


def plan_gpus(fleet, allocs: list[tuple[str, str, float]], batch: int, rate: float) -> list:
    """plan.json's `gpus`: every (session, model, SLO) of `allocs` on every server of `fleet`,
    at `batch` and `rate`, in a 40 ms duty cycle."""
    return [
        {
            "gpu": g.id,
            "gpu_type": g.gpu_type,
            "duty_cycle_ms": 40.0,
            "allocations": [
                {"session": s, "model": m, "batch": batch, "rate": rate, "slo_ms": slo}
                for s, m, slo in allocs
            ],
        }
        for g in fleet.gpus
    ]


def write_inputs(folder: Path, fleet, tight: bool = False) -> tuple[Path, Path, Path]:
    """plan.json (MODEL on every server; with `tight`, a second session that cannot be
    served), fleet.json and profiles.json whose curve ends at PROFILED_MAX."""
    sessions = [(MODEL, SLO_MS)] + ([(f"{MODEL}/tight", TIGHT_SLO_MS)] if tight else [])
    gpus = plan_gpus(fleet, [(s, MODEL, slo) for s, slo in sessions], batch=8, rate=50.0)
    points = [
        {"batch": b, "latency_ms": 2.0 + 0.2 * b, "memory_bytes": 0} for b in (1, 8, PROFILED_MAX)
    ]
    profiles = [{"model": MODEL, "gpu_type": fleet.gpus[0].gpu_type, "batches": points}]
    paths = folder / "plan.json", folder / "fleet.json", folder / "profiles.json"
    paths[0].write_text(json.dumps({"version": 1, "gpus": gpus, "unplaced": []}))
    paths[1].write_text(fleet.model_dump_json())
    paths[2].write_text(json.dumps({"version": 1, "profiles": profiles}))
    return paths


def load_warm(fleet, repo: Path, model: str = MODEL) -> None:
    """Load `model` on every server of `fleet` as the control plane does (control.actuator's
    override, whose `model_warmup` has Triton run it before it reports READY), so that the
    first batches a test routes there do not pay for its first run."""
    from control.actuator import Actuator

    actuator = Actuator(fleet, repo)
    for g in fleet.gpus:
        with TritonServer(g.server) as s:
            s.load(model, actuator.override(model, g, max_batch=8))


@pytest.fixture(scope="module")
def tiny(fleet, model_repo: Path):
    """The fleet with MODEL loaded, warm, on every server (unloaded at the module's end)."""
    load_warm(fleet, model_repo)
    yield fleet
    for g in fleet.gpus:
        with TritonServer(g.server) as s:
            s.unload(MODEL)
