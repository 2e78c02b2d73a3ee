"""Starting tnx's own services (control plane, router) as child processes, ready-checked and stopped.

Each service runs `python -m deploy.cli …` from this environment, logs to a
file, and counts as started only once its readiness URL answers 200; a service
that exits first is reported with the end of its log. Stopping is terminate,
then kill after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tnx.errors import ServerError


@dataclass(slots=True)
class Service:
    name: str
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def spawn(
    name: str,
    args: list[str],
    port: int,
    ready_path: str,
    log: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), full_env.get("PYTHONPATH")]))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", *args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )
    service = Service(name, f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                raise ServerError(f"{name} exited with code {proc.returncode}: {tail} (log: {log})")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(service.url + ready_path).status_code == 200:
                    return service
            time.sleep(0.1)
    service.stop(2)
    raise ServerError(f"{name} not ready within {timeout_s:.0f} s (log: {log})")
