"""`tnx router serve --workers N`: N router processes on one port, each owning its share of GPUs.

One router process is one core. With `--workers N` a supervisor starts N
worker processes; each binds the public port with SO_REUSEPORT (the kernel
spreads connections over them) and a private port of its own, which it
advertises to the control plane. So each worker registers as a router of its
own, is given its own GPUs (`control.ownership`), and forwards to its siblings
over loopback what they own (`router.forward`): the many-routers mechanism,
on the cores of one host. A worker that exits is started again; its GPUs go to
the others meanwhile. SIGTERM or SIGINT stops them all (terminate, then kill).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

# A worker that exits is restarted, but not more often than this (a port that cannot be
# bound must not spin).
RESTART_S = 2.0


@dataclass(slots=True)
class WorkerOptions:
    control: str
    host: str
    port: int
    advertise_host: str  # the private port's address, as other routers reach it
    drop: str = "early"
    max_body_mb: float = 64.0
    reserve_ms: float = 2.0
    grace_ms: float | None = None


def reachable_host(host: str) -> str:
    """The address others reach a server bound to `host` by (the host's own for a wildcard)."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostbyname(socket.gethostname())
    return host


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _exit_with(parent: int) -> None:
    """Stop this worker (gracefully) once its supervisor is gone, even SIGKILLed."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def run_worker(opts: WorkerOptions, parent: int) -> None:
    """One worker: the shared public port, a private one it is known by, one router."""
    import asyncio

    import uvicorn

    from router.app import create_app
    from router.cli import build_service
    from router.follow import initial_state

    _exit_with(parent)
    public = _bind(opts.host, opts.port, reuse_port=True)
    private = _bind(opts.host, 0, reuse_port=False)
    advertise = f"http://{opts.advertise_host}:{private.getsockname()[1]}"
    plan, revision, fleet, profiles = asyncio.run(initial_state(opts.control, advertise=advertise))
    service = build_service(
        plan,
        fleet,
        profiles,
        opts.drop,
        opts.max_body_mb,
        source=f"{opts.control}/v1/profiles",
        reserve_ms=opts.reserve_ms,
        grace_ms=opts.grace_ms,
        advertise=advertise,
    )
    service.revision = revision
    config = uvicorn.Config(
        create_app(service, opts.control), log_level="warning", timeout_graceful_shutdown=10
    )
    uvicorn.Server(config).run(sockets=[public, private])


def _spawn(opts: WorkerOptions) -> subprocess.Popen:
    args = [json.dumps(asdict(opts)), str(os.getpid())]
    return subprocess.Popen([sys.executable, "-m", "router.workers", *args])


def supervise(opts: WorkerOptions, workers: int, grace_s: float = 10.0) -> None:
    """Run `workers` workers until SIGTERM or SIGINT, restarting any that exits."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [_spawn(opts) for _ in range(workers)]
    started = [time.monotonic()] * workers
    while not stopping:
        time.sleep(0.2)
        for i, p in enumerate(procs):
            if p.poll() is not None and not stopping:
                wait = started[i] + RESTART_S - time.monotonic()
                if wait > 0:
                    continue
                log.warning(
                    "router worker %d exited with %s: starting it again", p.pid, p.returncode
                )
                procs[i], started[i] = _spawn(opts), time.monotonic()
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


if __name__ == "__main__":
    run_worker(WorkerOptions(**json.loads(sys.argv[1])), int(sys.argv[2]))
