"""The profiler on a real server: latencies agree with tritonclient's own measurement."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model_repo_tools.profiler import (
    ProfileSettings,
    measure_fleet,
    measure_model,
)
from model_repo_tools.profiles import ProfileSet
from model_repo_tools.triton_client import TritonServer
from tnx.errors import ServerError, UserInputError

pytestmark = pytest.mark.integration

BATCHES = (8, 32, 64)  # several ms each: timer and scheduler noise stay small beside them


def _direct(server: TritonServer, batch: int, runs: int = 30) -> float:
    """tritonclient's own measurement: the median of `runs` timed gRPC calls after warm-up."""
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
    for _ in range(10):
        server.infer("backbone_classifier", {"input": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        server.infer("backbone_classifier", {"input": x})
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def test_profile_latencies_within_30_percent_of_tritonclient(fleet) -> None:
    gpu = fleet.gpus[0]
    with TritonServer(gpu.server) as server:
        settings = ProfileSettings(batches=(8,))
        first = measure_model(server, gpu, "backbone_classifier", settings).profile
        assert not server.is_model_ready("backbone_classifier")  # it loaded it, so it unloads
        assert first.gpu_type == gpu.gpu_type and first.weights_bytes > 0
        assert first.batches[0].memory_bytes > 0
        server.load("backbone_classifier")
        try:
            # Each size profiled, then measured directly, back to back, so that the noise
            # of a shared machine drifts as little as possible between the two; both take
            # the median (tnx's l(b) by default). A shared machine's noise can swing one
            # pair; a systematic error cannot pass three pairs in a row, so each size gets
            # up to three tries.
            points = []
            for b in BATCHES:
                tries = []
                for _ in range(3):
                    settings = ProfileSettings(batches=(b,))
                    run = measure_model(server, gpu, "backbone_classifier", settings)
                    [point] = run.profile.batches
                    direct = _direct(server, b)
                    tries.append((point.latency_ms, direct))
                    if abs(point.latency_ms - direct) / direct < 0.30:
                        break
                else:
                    raise AssertionError(f"batch {b}: (profiled, direct) ms = {tries}")
                points.append(point)
            # All sizes in one profile: interleaved rounds, a monotone fit.
            run = measure_model(
                server, gpu, "backbone_classifier", ProfileSettings(batches=BATCHES)
            )
        finally:
            server.unload("backbone_classifier")
    assert points[-1].latency_ms > points[0].latency_ms
    for p in points:  # one size: no fit, the median itself, inside its own spread
        assert p.p10_ms <= p.latency_ms <= p.p90_ms and p.samples >= 5 * 5
    rows = run.profile.batches
    assert [p.batch for p in rows] == list(BATCHES) and run.rounds >= 5
    assert all(a.latency_ms <= b.latency_ms for a, b in itertools.pairwise(rows))
    assert all(a.memory_bytes <= b.memory_bytes for a, b in itertools.pairwise(rows))
    assert set(run.measured_ms) == set(BATCHES)
    assert all(p.samples == run.rounds * 5 for p in rows)


def test_profile_errors(fleet, tmp_path: Path, model_repo: Path) -> None:
    with (
        TritonServer(fleet.gpus[0].server) as server,
        pytest.raises(UserInputError, match="'nope' is not in"),
    ):
        measure_model(server, fleet.gpus[0], "nope")
    dead = fleet.gpus[0].model_copy(update={"server": "127.0.0.1:1", "id": "dead"})
    with pytest.raises(ServerError, match="127.0.0.1:1"):
        list(measure_fleet([dead], ["tiny_mlp"]))
    # The CLI writes profiles.json in the contract format.
    fleet_file = tmp_path / "fleet.json"
    fleet_file.write_text(fleet.model_copy(update={"gpus": fleet.gpus[:1]}).model_dump_json())
    out = tmp_path / "profiles.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy.cli",
            "profile",
            "--fleet",
            str(fleet_file),
            "--repo",
            str(model_repo),
            "--model",
            "tiny_mlp",
            "--batches",
            "1,4",
            "--runs",
            "5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    [p] = ProfileSet.load(out).profiles
    assert p.model == "tiny_mlp" and [b.batch for b in p.batches] == [1, 4]
    assert p.batches[0].latency_ms <= p.batches[1].latency_ms
    assert p.batches[0].memory_bytes <= p.batches[1].memory_bytes
    assert p.batches[0].samples == p.batches[1].samples >= 5 * 5
    # The table: a row per size with its fitted l(b), the measured median, spread and count.
    assert "p10-p90 ms" in proc.stdout and "median of one batch" in proc.stdout, proc.stdout
    row = next(ln.split() for ln in proc.stdout.splitlines() if ln.split()[:1] == ["4"])
    assert len(row) == 6 and int(row[4]) == p.batches[1].samples
