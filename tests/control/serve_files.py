"""The files `tnx control serve` reads (profiles, workload, a store), written for a test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def tiny_mlp_profile(ms_per_sample: float) -> dict[str, Any]:
    """A declared CPU profile of tiny_mlp: `ms_per_sample` each sample, batches 1 to 8."""
    points = [
        {"batch": b, "latency_ms": ms_per_sample * b, "memory_bytes": 1} for b in (1, 2, 4, 8)
    ]
    return {"model": "tiny_mlp", "gpu_type": "cpu", "batches": points}


def serve_files(
    folder: Path, repo: Path, profiles: list[dict[str, Any]], sessions: list[dict[str, Any]]
) -> list[str]:
    """Write `profiles` and `sessions` into `folder`; the flags naming them, `repo` and a
    store in `folder`."""
    (folder / "profiles.json").write_text(json.dumps({"profiles": profiles}))
    (folder / "workload.json").write_text(json.dumps({"sessions": sessions}))
    return [
        "--repo",
        str(repo),
        "--profiles",
        str(folder / "profiles.json"),
        "--workload",
        str(folder / "workload.json"),
        "--state",
        str(folder / "state.sqlite"),
    ]
