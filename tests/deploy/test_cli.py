"""The `tnx` CLI end to end, as a user runs it: export → repo add → fleet up → infer → fleet down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CUSTOM_FACTORY

pytestmark = pytest.mark.integration


def tnx(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tnx {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_user_model_through_the_cli_on_two_servers(tmp_path: Path) -> None:
    import torch

    from exporters.factory import load_factory
    from model_repo_tools.triton_client import TritonServer

    (tmp_path / "scorer.py").write_text(CUSTOM_FACTORY)
    out = tnx(
        "export",
        "scorer.py:make",
        "--input-shape",
        "4x24",
        "--name",
        "scorer",
        "--out",
        "models",
        cwd=tmp_path,
    )
    assert "max abs" in out.stdout and "FAIL" not in out.stdout
    tnx(
        "repo",
        "add",
        "models/scorer.onnx",
        "--repo",
        "repo",
        "--backend",
        "python",
        "--max-batch",
        "32",
        cwd=tmp_path,
    )
    assert "1 model(s) ok" in tnx("repo", "check", "repo", cwd=tmp_path).stdout
    tnx("fleet", "up", "--servers", "2", "--repo", "repo", "--state", "fleet.json", cwd=tmp_path)
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    pids = [g["pid"] for g in fleet["gpus"]]
    try:
        assert len(fleet["gpus"]) == 2
        assert {"id", "gpu_type", "memory_bytes", "server", "http", "pid"} <= set(fleet["gpus"][0])
        status = tnx("fleet", "status", "--state", "fleet.json", cwd=tmp_path).stdout
        assert status.count("ready") == 2 and "log" in status
        model = load_factory(f"{tmp_path}/scorer.py:make")
        for gpu in fleet["gpus"]:
            with TritonServer(gpu["server"]) as server:
                server.load("scorer")
                for b in (1, 7, 32):
                    x = np.random.default_rng(b).standard_normal((b, 4, 24), dtype=np.float32)
                    y = server.infer("scorer", {"input": x})["output"]
                    with torch.no_grad():
                        ref = model(torch.from_numpy(x)).numpy()
                    assert np.abs(y - ref).max() < 1e-4
    finally:
        down = tnx("fleet", "down", "--state", "fleet.json", "--grace", "5", cwd=tmp_path)
    assert "stopped 2 server(s)" in down.stdout
    assert not any(_running(p) for p in pids)
    assert (
        tnx("fleet", "status", "--state", "fleet.json", cwd=tmp_path, check=False).returncode == 1
    )


def test_cli_errors_are_one_line(tmp_path: Path, exported) -> None:
    from model_repo_tools.repository import add_model

    line = one_line_error(
        tnx(
            "fleet",
            "up",
            "--repo",
            str(tmp_path),
            "--state",
            "f.json",
            "--tritonserver",
            "/nonexistent/tritonserver",
            cwd=tmp_path,
            check=False,
        )
    )
    assert "/nonexistent/tritonserver" in line
    folder = add_model(exported.custom_onnx, tmp_path / "repo", name="m")
    cfg = folder / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 64", "max_batch_size: -x"))
    proc = tnx("repo", "check", str(tmp_path / "repo"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("m: ") and "config.pbtxt" in proc.stderr
    line = one_line_error(
        tnx(
            "export",
            "nofile.py:make",
            "--input-shape",
            "3",
            "--name",
            "x",
            cwd=tmp_path,
            check=False,
        )
    )
    assert "nofile.py:make" in line
    line = one_line_error(
        tnx("repo", "add", "missing.onnx", "--repo", "r", cwd=tmp_path, check=False)
    )
    assert "missing.onnx" in line
    line = one_line_error(
        tnx("fleet", "status", "--state", "nothere.json", cwd=tmp_path, check=False)
    )
    assert "nothere.json" in line
