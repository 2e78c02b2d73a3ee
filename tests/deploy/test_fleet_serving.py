"""A real 2-server local fleet: load, infer against torch, config overrides, unload, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from exporters.factory import load_factory
from model_repo_tools.config import build_config, to_override_json, to_pbtxt
from model_repo_tools.onnx_io import read_io
from model_repo_tools.repository import runner_source
from model_repo_tools.triton_client import TritonServer
from tnx.errors import FleetError, MissingDependencyError, ServerError

pytestmark = pytest.mark.integration


def _torch(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_custom_model_answers_like_torch_on_both_servers(fleet, exported) -> None:
    model = load_factory(exported.custom_factory)
    rng = np.random.default_rng(0)
    assert len(fleet.gpus) == 2
    for gpu in fleet.gpus:
        with TritonServer(gpu.server) as server:
            server.load("scorer")
            assert server.is_model_ready("scorer")
            for b in (1, 7, 32):
                x = rng.standard_normal((b, 4, 24), dtype=np.float32)
                y = server.infer("scorer", {"input": x})["output"]
                assert y.shape == (b, 6)
                assert np.abs(y - _torch(model, x)).max() < 1e-4
            server.unload("scorer")
            assert not server.is_model_ready("scorer")


def test_load_with_a_json_override_from_model_config_pb2(fleet, exported) -> None:
    inputs, outputs = read_io(exported.mlp_onnx)
    cfg = build_config("tiny_mlp", "python", inputs, outputs, max_batch_size=16, instance_count=2)
    with TritonServer(fleet.gpus[0].server) as server:
        server.load("tiny_mlp", config_json=to_override_json(cfg))
        try:
            live = server.config("tiny_mlp")
            assert int(live["max_batch_size"]) == 16
            assert live["instance_group"][0]["count"] == 2
            x = np.random.default_rng(1).standard_normal((16, 64), dtype=np.float32)
            y = server.infer("tiny_mlp", {"input": x})["output"]
            ref = _torch(load_factory("exporters.examples:tiny_mlp"), x)
            assert np.abs(y - ref).max() < 1e-4
            with pytest.raises(ServerError, match="batch-size must be <= 16"):
                server.infer("tiny_mlp", {"input": np.zeros((17, 64), np.float32)})
            states = {m["name"]: m.get("state") for m in server.repository_index()}
            assert states["tiny_mlp"] == "READY"
        finally:
            server.unload("tiny_mlp")


def test_an_override_with_an_unknown_field_is_rejected_clearly(fleet) -> None:
    with TritonServer(fleet.gpus[1].server) as server, pytest.raises(ServerError) as err:
        server.load("tiny_mlp", config_json='{"max_batch_size": 4, "not_a_field": 1}')
    assert fleet.gpus[1].server in str(err.value) and "load tiny_mlp" in str(err.value)


def test_bad_requests_get_clear_errors(fleet) -> None:
    with TritonServer(fleet.gpus[1].server) as server:
        with pytest.raises(ServerError, match="infer no_such_model: .*(unknown|not found)"):
            server.infer("no_such_model", {"input": np.zeros((1, 64), np.float32)})
        with pytest.raises(ServerError, match="load no_such_model"):
            server.load("no_such_model")
        server.load("scorer")
        try:
            with pytest.raises(ServerError, match="unexpected shape for input 'input'"):
                server.infer("scorer", {"input": np.zeros((2, 4, 25), np.float32)})
        finally:
            server.unload("scorer")


def test_a_broken_config_fails_to_load_with_its_reason(fleet, model_repo: Path) -> None:
    broken = model_repo / "broken"
    (broken / "1").mkdir(parents=True)
    # An input without data_type: Triton's own validation refuses it at load.
    cfg = mc.ModelConfig(name="broken", backend="python", max_batch_size=4)
    cfg.input.add(name="input", dims=[4])
    cfg.output.add(name="output", data_type=mc.TYPE_FP32, dims=[4])
    (broken / "config.pbtxt").write_text(to_pbtxt(cfg))
    # model.py must exist: the Python stub hangs the load when it is missing (Triton 2.51).
    (broken / "1" / "model.py").write_text(runner_source())
    try:
        with TritonServer(fleet.gpus[0].server, timeout_s=20) as server:
            with pytest.raises(ServerError) as err:
                server.load("broken")
            assert "load broken" in str(err.value)
            assert "model input 'input' must specify 'data_type'" in str(err.value)
            assert not server.is_model_ready("broken")
    finally:
        shutil.rmtree(broken)


def test_missing_binary_port_taken_and_death_at_start(tmp_path: Path, model_repo: Path) -> None:
    from deploy.fleet import free_port, start_fleet

    with pytest.raises(MissingDependencyError, match="not found or not executable: /nonexistent"):
        start_fleet(1, model_repo, tmp_path, tritonserver="/nonexistent/tritonserver")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(FleetError, match=f"port 127.0.0.1:{port} is already taken"):
            start_fleet(1, model_repo, tmp_path, base_port=port)
    with pytest.raises(FleetError, match="exited with code"):
        start_fleet(1, model_repo, tmp_path, extra_args=["--no-such-flag"])
    with pytest.raises(FleetError, match="not a directory"):
        start_fleet(1, tmp_path / "nope", tmp_path)
    assert free_port() > 0


def test_stopping_a_fleet_reaps_the_stubs_of_a_server_that_died(model_repo, tmp_path) -> None:
    import os
    import signal
    import time

    from deploy.fleet import start_fleet, stop_fleet, triton_group

    own = start_fleet(1, model_repo, tmp_path / "fleet")
    pid = own.gpus[0].pid
    assert pid is not None
    try:
        with TritonServer(own.gpus[0].server) as server:
            server.load("tiny_mlp")
        stubs = [p for p in triton_group(pid) if p != pid]
        assert stubs, "a loaded Python-backend model runs in a stub of the server's group"
        os.kill(pid, signal.SIGKILL)  # the server alone, as a crash would
        deadline = time.monotonic() + 5
        while pid in triton_group(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stopped = stop_fleet(own, grace_s=5)
    assert stopped == [own.gpus[0].id]
    assert triton_group(pid) == []
