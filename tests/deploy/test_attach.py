"""`tnx fleet attach`: the qualification checks (pure), then real tritonserver processes
started apart from tnx's fleet: two that qualify, one not in explicit mode, one not there."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.attach import Address, Problem, Reading, gpu_ids, gpu_totals, parse_address, qualify
from model_repo_tools.fleet import Fleet, FleetGpu
from tests.deploy.test_cli import one_line_error, tnx
from tnx.errors import UserInputError

GIB = 1 << 30
OK = Reading("triton-0.triton:8001", live=True, model_control=True, gpu_memory=(80 * GIB,))


def test_a_server_that_qualifies_gets_its_gpu_memory_from_its_metrics() -> None:
    g = qualify(OK, "triton-0/0", "h100", None)
    assert isinstance(g, FleetGpu)
    assert (g.id, g.gpu_type, g.memory_bytes, g.server) == (
        "triton-0/0",
        "h100",
        80 * GIB,
        "triton-0.triton:8001",
    )
    assert qualify(OK, "triton-0/0", "h100", 70 * GIB).memory_bytes == 70 * GIB


@pytest.mark.parametrize(
    ("reading", "gpu_memory", "reason"),
    [
        (Reading("a:1", unreachable="connection refused"), None, "not reachable.*refused"),
        (Reading("a:1", live=False, model_control=True), GIB, "not live"),
        (Reading("a:1", live=True, model_control=False), GIB, "--model-control-mode=explicit"),
        (
            Reading("a:1", live=True, model_control=True, gpu_memory=(GIB, GIB)),
            None,
            "show 2 GPUs; tnx runs one Triton per GPU",
        ),
        (OK, 81 * GIB, f"--gpu-memory {81 * GIB} exceeds its GPU's {80 * GIB} bytes"),
        (Reading("a:1", live=True, model_control=True), None, "pass --gpu-memory"),
        # DCGM unavailable: the GPU is listed with 0 bytes (seen on an H200 machine).
        (Reading("a:1", live=True, model_control=True, gpu_memory=(0,)), None, "--gpu-memory"),
    ],
)
def test_a_server_that_does_not_qualify_is_told_why(
    reading: Reading, gpu_memory: int | None, reason: str
) -> None:
    p = qualify(reading, "x/0", "h100", gpu_memory)
    assert isinstance(p, Problem)
    assert str(p).startswith(f"server {reading.server}: ")
    assert "\n" not in str(p)
    assert re.search(reason, p.reason), p.reason


def test_ids_follow_the_statefulset_pod_names_else_the_address() -> None:
    pods = [parse_address(f"triton-{i}.triton.tnx.svc:8001") for i in range(3)]
    assert gpu_ids(pods) == ["triton-0/0", "triton-1/0", "triton-2/0"]
    ips = [parse_address("10.0.0.7:8001"), parse_address("[::1]:8001")]
    assert gpu_ids(ips) == ["10.0.0.7:8001/0", "[::1]:8001/0"]
    clash = [parse_address("gpu.a:8001"), parse_address("gpu.b:8001")]
    assert gpu_ids(clash) == ["gpu.a:8001/0", "gpu.b:8001/0"]


def test_addresses_are_host_and_port() -> None:
    assert parse_address("triton-0.triton:8001") == Address("triton-0.triton", 8001)
    assert parse_address("h:8001").beside(-1) == "h:8000"
    for bad in ("triton-0", ":8001", "h:port", "h:0"):
        with pytest.raises(UserInputError, match="not a gRPC host:port"):
            parse_address(bad)


def test_gpu_totals_per_gpu_from_triton_metrics() -> None:
    text = (
        "# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes\n"
        "# TYPE nv_gpu_memory_total_bytes gauge\n"
        'nv_gpu_memory_total_bytes{gpu_uuid="GPU-a"} 1.5e11\n'
        'nv_gpu_memory_total_bytes{gpu_uuid="GPU-b"} 8e10\n'
        "# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes\n"
        "# TYPE nv_gpu_memory_used_bytes gauge\n"
        'nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} 1e9\n'
    )
    assert gpu_totals(text) == (150_000_000_000, 80_000_000_000)
    assert gpu_totals("# HELP nv_cpu_utilization x\n# TYPE nv_cpu_utilization gauge\n") == ()


# --- against real tritonserver processes ---


def _free_row(n: int) -> int:
    """A base port with n free ports in a row, as Triton's default layout needs them."""
    from deploy.fleet import free_port, port_is_free

    for _ in range(50):
        base = free_port()
        if base + n < 65535 and all(port_is_free(base + i) for i in range(n)):
            return base
    raise AssertionError(f"no {n} free ports in a row")


@dataclass
class Running:
    good: Fleet  # two servers in explicit mode, ports in Triton's default layout
    polling: Fleet  # one server in Triton's default model-control mode (none)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Servers tnx did not start for this fleet.json: stopped by pid at the end, whatever
    happened in between."""
    from deploy.fleet import start_fleet, stop_fleet

    repo = tmp_path_factory.mktemp("empty-repo")
    logs = tmp_path_factory.mktemp("attach-logs")
    started: list[Fleet] = []
    try:
        started.append(start_fleet(2, repo, logs / "good", base_port=_free_row(6)))
        # The later flag wins: this server polls nothing and refuses loads and unloads.
        started.append(
            start_fleet(
                1,
                repo,
                logs / "polling",
                base_port=_free_row(3),
                extra_args=["--model-control-mode=none"],
            )
        )
        yield Running(*started)
    finally:
        for fl in started:
            stop_fleet(fl, grace_s=5)


def attach_cpu(cwd: Path, *args: str, check: bool = True):
    """`tnx fleet attach ARGS… --gpu-type cpu --gpu-memory 1 GiB` run in `cwd`."""
    return tnx(
        "fleet",
        "attach",
        *args,
        "--gpu-type",
        "cpu",
        "--gpu-memory",
        str(GIB),
        cwd=cwd,
        check=check,
    )


@pytest.mark.integration
def test_attach_writes_a_fleet_of_running_servers(running: Running, tmp_path: Path) -> None:
    state = tmp_path / "fleet.json"
    addrs = [g.server for g in running.good.gpus]
    out = attach_cpu(tmp_path, *addrs, "--state", str(state))
    assert "fleet of 2 attached" in out.stdout
    fleet = Fleet.load(state)
    assert [g.server for g in fleet.gpus] == addrs
    assert [g.id for g in fleet.gpus] == [f"{a}/0" for a in addrs]
    for g, started in zip(fleet.gpus, running.good.gpus, strict=True):
        assert (g.gpu_type, g.memory_bytes) == ("cpu", GIB)
        assert (g.http, g.metrics) == (started.http, started.metrics)  # found beside gRPC
        assert g.pid is None and g.log is None  # not ours to stop
    # The attached fleet reads as any other; `fleet down` leaves the servers running.
    assert tnx("fleet", "status", "--state", str(state), cwd=tmp_path).stdout.count("ready") == 2
    assert "stopped 0 server(s)" in tnx("fleet", "down", "--state", str(state), cwd=tmp_path).stdout
    assert tnx("fleet", "status", "--state", str(state), cwd=tmp_path).stdout.count("ready") == 2
    raw = json.loads(state.read_text())
    assert set(raw["gpus"][0]) == {"id", "gpu_type", "memory_bytes", "server", "http", "metrics"}


@pytest.mark.integration
def test_a_server_not_in_explicit_mode_is_named_in_one_line(
    running: Running, tmp_path: Path
) -> None:
    bad = running.polling.gpus[0].server
    state = tmp_path / "fleet.json"
    proc = attach_cpu(
        tmp_path, running.good.gpus[0].server, bad, "--state", str(state), check=False
    )
    line = one_line_error(proc)
    assert f"server {bad}: not in explicit model-control mode" in line
    assert running.good.gpus[0].server not in line
    assert not state.exists()


@pytest.mark.integration
def test_an_unreachable_server_is_named_in_one_line_after_the_wait(tmp_path: Path) -> None:
    gone = f"127.0.0.1:{_free_row(1)}"
    t0 = time.monotonic()
    proc = attach_cpu(
        tmp_path, gone, "--wait", "1.5", "--state", str(tmp_path / "f.json"), check=False
    )
    assert time.monotonic() - t0 >= 1.5
    line = one_line_error(proc)
    assert line.startswith(f"tnx: error: server {gone}: not reachable over gRPC")


@pytest.mark.integration
def test_a_cpu_server_without_gpu_memory_must_be_told_it(running: Running, tmp_path: Path) -> None:
    g = running.good.gpus[0]
    proc = tnx(
        "fleet",
        "attach",
        g.server,
        "--gpu-type",
        "cpu",
        "--state",
        str(tmp_path / "f.json"),
        cwd=tmp_path,
        check=False,
    )
    line = one_line_error(proc)
    assert f"server {g.server}: no GPU memory in its metrics at http://{g.metrics}/metrics" in line
