"""A local fleet of real `tritonserver` processes: the embedded default executor pool.

Each server gets free loopback ports (HTTP, gRPC, metrics), explicit model
control and its own log file, and is started in its own process group so that
stopping it also stops its Python-backend stubs. Shutdown is terminate, then
kill after a grace period (as Triton Model Analyzer does). Processes are read
with psutil; waits are tenacity's (`deploy.services.wait_until`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from deploy.hardware import Executor, detect_executors
from deploy.services import wait_ready, wait_until
from deploy.triton import find_tritonserver
from model_repo_tools.fleet import Fleet, FleetGpu
from model_repo_tools.host import process_group
from tnx.errors import FleetError

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = HOST, reuse: bool = False) -> bool:
    """Whether a listener could bind `port`; `reuse`: as servers bind (SO_REUSEADDR), so
    connections of a stopped server still in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass(slots=True)
class ServerSpec:
    index: int
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path
    executor: Executor


def _choose_ports(n: int, base_port: int | None) -> list[tuple[int, int, int]]:
    if base_port is None:
        taken: set[int] = set()
        out = []
        for _ in range(n):
            trio = []
            while len(trio) < 3:
                p = free_port()
                if p not in taken:
                    taken.add(p)
                    trio.append(p)
            out.append((trio[0], trio[1], trio[2]))
        return out
    out = [(base_port + 3 * i, base_port + 3 * i + 1, base_port + 3 * i + 2) for i in range(n)]
    for trio in out:
        for p in trio:
            if not port_is_free(p):
                raise FleetError(f"port {HOST}:{p} is already taken (--base-port {base_port})")
    return out


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [ln for ln in text if ln[:1] == "E" or "error" in ln.lower()]
    return " | ".join((errors or text)[-lines:])


def _wait_ready(proc: subprocess.Popen, spec: ServerSpec, deadline: float) -> None:
    url = f"http://{HOST}:{spec.http_port}/v2/health/ready"
    if wait_ready(proc, url, deadline - time.monotonic()):
        return
    if proc.poll() is not None:
        raise FleetError(
            f"tritonserver {spec.index} (http {HOST}:{spec.http_port}) exited with code "
            f"{proc.returncode} at start: {_log_tail(spec.log)} (log: {spec.log})"
        )
    raise FleetError(f"tritonserver {spec.index} not ready within timeout (log: {spec.log})")


def _launch(
    command: list[str],
    env: dict[str, str],
    repo: Path,
    spec: ServerSpec,
    extra_args: Iterable[str],
    mode: str = "wb",
) -> subprocess.Popen:
    args = command + [
        f"--model-repository={repo}",
        "--model-control-mode=explicit",
        f"--http-address={HOST}",
        f"--grpc-address={HOST}",
        f"--http-port={spec.http_port}",
        f"--grpc-port={spec.grpc_port}",
        f"--metrics-port={spec.metrics_port}",
        "--allow-metrics=true",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
        *extra_args,
    ]
    env = {**env, **spec.executor.env}
    with open(spec.log, mode) as log:
        # Its own session: the server and its backend stubs form one process group.
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_fleet(
    n: int,
    repo: Path,
    state_dir: Path,
    tritonserver: str | None = None,
    base_port: int | None = None,
    ready_timeout_s: float = 90.0,
    extra_args: Iterable[str] = (),
) -> Fleet:
    """Start n servers over one repository; return the fleet once every server is ready.

    Any failure stops the servers already started before the error propagates.
    """
    if n < 1:
        raise FleetError("--servers must be at least 1")
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise FleetError(f"model repository {repo} is not a directory")
    install = find_tritonserver(tritonserver)
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    executors = detect_executors(n)
    specs = [
        ServerSpec(i, h, g, m, state_dir / f"triton-{i}.log", executors[i])
        for i, (h, g, m) in enumerate(_choose_ports(n, base_port))
    ]
    procs: list[subprocess.Popen] = []
    try:
        for spec in specs:
            procs.append(_launch(install.args(), install.env(), repo, spec, extra_args))
        deadline = time.monotonic() + ready_timeout_s
        for spec, proc in zip(specs, procs, strict=True):
            _wait_ready(proc, spec, deadline)
    except BaseException:
        stop_pids([p.pid for p in procs])
        raise
    return Fleet(
        gpus=[
            FleetGpu(
                id=f"triton-{s.index}/0",
                gpu_type=s.executor.gpu_type,
                memory_bytes=s.executor.memory_bytes,
                server=f"{HOST}:{s.grpc_port}",
                http=f"{HOST}:{s.http_port}",
                metrics=f"{HOST}:{s.metrics_port}",
                pid=p.pid,
                log=str(s.log),
            )
            for s, p in zip(specs, procs, strict=True)
        ]
    )


def _port(address: str | None, what: str, gpu: str) -> int:
    tail = (address or "").rpartition(":")[2]
    if not tail.isdigit():
        raise FleetError(f"fleet gpu {gpu}: no {what} port in {address!r}")
    return int(tail)


def restart_server(
    fleet: Fleet,
    gpu_id: str,
    repo: Path,
    tritonserver: str | None = None,
    ready_timeout_s: float = 90.0,
    extra_args: Iterable[str] = (),
) -> Fleet:
    """Start the server of `gpu_id` again on its own ports, empty (explicit model control:
    no model loaded), after whatever is left of it is stopped; the fleet with its new pid.
    What a crashed pod's restart looks like to the control plane."""
    by_id = fleet.by_id()
    if gpu_id not in by_id:
        raise FleetError(f"gpu {gpu_id!r} is not in the fleet")
    g = by_id[gpu_id]
    index = int(gpu_id.split("-", 1)[-1].split("/", 1)[0]) if gpu_id.startswith("triton-") else 0
    if g.pid:
        stop_fleet(Fleet(gpus=[g]), grace_s=5.0)
    install = find_tritonserver(tritonserver)
    ports = [_port(g.http, "http", gpu_id), _port(g.server, "grpc", gpu_id)]
    ports.append(_port(g.metrics, "metrics", gpu_id))
    if not wait_until(lambda: all(port_is_free(p, reuse=True) for p in ports), 10.0):
        busy = [p for p in ports if not port_is_free(p, reuse=True)]
        raise FleetError(f"gpu {gpu_id}: port {HOST}:{busy[0]} still taken after its stop")
    spec = ServerSpec(
        index,
        _port(g.http, "http", gpu_id),
        _port(g.server, "grpc", gpu_id),
        _port(g.metrics, "metrics", gpu_id),
        Path(g.log) if g.log else Path(repo).parent / f"triton-{index}.log",
        detect_executors(index + 1)[index],
    )
    proc = _launch(install.args(), install.env(), Path(repo).resolve(), spec, extra_args, "ab")
    try:
        _wait_ready(proc, spec, time.monotonic() + ready_timeout_s)
    except BaseException:
        stop_pids([proc.pid])
        raise
    return Fleet(
        gpus=[
            x.model_copy(update={"pid": proc.pid}) if x.server == g.server else x
            for x in fleet.gpus
        ]
    )


def _alive(pid: int) -> bool:
    """Whether `pid` has not exited; a zombie child of ours is reaped on the way."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return _is_running(pid)


def _wait_gone(pids: list[int], grace_s: float, running: Callable[[int], bool]) -> None:
    wait_until(lambda: not any(running(p) for p in pids), grace_s, interval_s=0.05)


def _is_running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (a zombie has, though it is not reaped yet)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _argv0(proc: psutil.Process) -> str:
    try:
        return next(iter(proc.cmdline()), "")
    except psutil.Error:  # gone, a zombie, or not ours to read
        return ""


def is_tritonserver(pid: int) -> bool:
    """Guard against pid reuse: only signal processes that are tritonserver."""
    with contextlib.suppress(psutil.Error):
        return _argv0(psutil.Process(pid)).endswith("tritonserver")
    return False


def stop_pids(pids: Iterable[int], grace_s: float = 10.0) -> None:
    """SIGTERM each server's process group, then SIGKILL what is left after the grace period."""
    pids = [p for p in pids if p]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    _wait_gone(pids, grace_s, _alive)
    for pid in pids:
        # The group may hold stubs even after the server itself has gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def triton_group(pgid: int) -> list[int]:
    """The processes of process group `pgid` that are Triton's (the server, its Python-backend
    stubs): what is left of a server that died, found by its group since the server started
    its own session. Others that happen to share a reused group id are left alone."""
    return [p.pid for p in process_group(pgid) if "triton" in _argv0(p)]


def stop_fleet(fleet: Fleet, grace_s: float = 10.0) -> list[str]:
    """Stop every server of the fleet that is still ours, and reap what is left of those that
    died (their Python-backend stubs ignore SIGTERM and outlive them); return the ids stopped."""
    stopped = [g for g in fleet.gpus if g.pid and is_tritonserver(g.pid)]
    stop_pids([g.pid for g in stopped if g.pid], grace_s=grace_s)
    ids = [g.id for g in stopped]
    for g in fleet.gpus:
        if not g.pid or g in stopped:
            continue
        leftovers = triton_group(g.pid)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if leftovers:
            ids.append(g.id)
            # Gone, not just signalled: a stub may hold the server's inherited sockets.
            _wait_gone(leftovers, grace_s, _is_running)
    return ids


@dataclass(slots=True)
class ServerHealth:
    id: str
    http: str | None
    pid: int | None
    running: bool
    live: bool
    ready: bool
    log: str | None


def fleet_health(fleet: Fleet) -> list[ServerHealth]:
    out = []
    with httpx.Client(timeout=2.0) as client:
        for g in fleet.gpus:
            running = bool(g.pid) and _is_running(g.pid) and is_tritonserver(g.pid)
            live = ready = False
            if g.http:
                with contextlib.suppress(httpx.HTTPError):
                    live = client.get(f"http://{g.http}/v2/health/live").status_code == 200
                with contextlib.suppress(httpx.HTTPError):
                    ready = client.get(f"http://{g.http}/v2/health/ready").status_code == 200
            out.append(ServerHealth(g.id, g.http, g.pid, running, live, ready, g.log))
    return out
