"""Starting tnx's own services (control plane, router) as child processes, ready-checked and stopped.

Each service runs `python -m deploy.cli …` from this environment, logs to a
file, and counts as started only once its readiness URL answers 200; a service
that exits first is reported with the end of its log. Stopping is terminate,
then kill after a grace period. Waits are tenacity's (`wait_until`).
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from tnx.errors import ServerError


def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 0.1,
    retry_on: tuple[type[Exception], ...] = (),
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Call `check` every `interval_s` until it returns True (→ True), or until `timeout_s`
    have passed or `give_up()` holds (→ False); an exception of `retry_on` counts as False."""
    retrying = Retrying(
        stop=stop_after_delay(max(0.0, timeout_s)) | (lambda _: give_up()),
        wait=wait_fixed(interval_s),
        retry=retry_if_result(operator.not_) | retry_if_exception_type(retry_on),
        retry_error_callback=lambda _: False,
    )
    return retrying(check)


def wait_ready(proc: subprocess.Popen, url: str, timeout_s: float) -> bool:
    """Whether `url` answered 200 within `timeout_s`, before `proc` exited."""
    with httpx.Client(timeout=1.0) as client:
        return wait_until(
            lambda: client.get(url).status_code == 200,
            timeout_s,
            retry_on=(httpx.HTTPError,),
            give_up=lambda: proc.poll() is not None,
        )


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
    if wait_ready(proc, service.url + ready_path, timeout_s):
        return service
    if proc.poll() is not None:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise ServerError(f"{name} exited with code {proc.returncode}: {tail} (log: {log})")
    service.stop(2)
    raise ServerError(f"{name} not ready within {timeout_s:.0f} s (log: {log})")
