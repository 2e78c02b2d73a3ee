"""The stage of `tnx bench chaos` and of the failover tests: a fleet, a control plane, a router.

Real processes throughout: `tritonserver`s from `deploy.fleet`, `tnx control serve` and
`tnx router serve --control` as children, one session of one model. Its profile is
measured on the fleet before the control plane starts, so the plan is what the
scheduler makes of real batch times. Faults are what operators see: a server SIGKILLed
(its whole process group, Python-backend stubs included), SIGSTOPped and SIGCONTinued,
restarted empty on its ports, and the router or the control plane SIGKILLed and
started again. `PlanWatch` polls the control plane's plan every 100 ms, so the time
until a plan stops (or starts again) using a server is read off its samples.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import router_setup as st
from deploy.fleet import free_port, restart_server, start_fleet, stop_fleet
from deploy.services import Service, spawn, wait_until
from model_repo_tools.fleet import Fleet, FleetGpu
from model_repo_tools.triton_client import TritonServer
from tnx.errors import ServerError

BATCHES = [1, 2, 4, 8, 16, 32]


@dataclass(slots=True)
class ChaosConfig:
    servers: int = 3
    model: str = st.TINY
    rate: float = 200.0  # req/s of the one session
    slo_ms: float = 100.0
    epoch_s: float = 5.0


@dataclass(slots=True)
class PlanSample:
    t: float  # time.monotonic()
    revision: int
    gpus: frozenset[str]  # GPUs with an allocation of the session


@dataclass(slots=True)
class PlanWatch:
    """Samples of the control plane's plan, every `interval_s`, in a thread."""

    url: str
    session: str
    interval_s: float = 0.1
    samples: list[PlanSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=0.5) as client:
            while not self._stop.wait(self.interval_s):
                try:
                    body = client.get(f"{self.url}/v1/plan").json()
                except (httpx.HTTPError, ValueError):
                    continue  # the control plane is down or busy: no sample
                gpus = frozenset(
                    g["gpu"]
                    for g in body.get("gpus", [])
                    if any(a["session"] == self.session for a in g["allocations"])
                )
                self.samples.append(PlanSample(time.monotonic(), body.get("revision", 0), gpus))

    def first(self, after: float, test: Callable[[frozenset[str]], bool]) -> float | None:
        """Seconds from `after` to the first sample at or after it that passes `test`."""
        for s in list(self.samples):
            if s.t >= after and test(s.gpus):
                return s.t - after
        return None

    def wait(self, after: float, test: Callable[[frozenset[str]], bool], timeout_s: float) -> float:
        """`first`, once a sample passes `test`; TimeoutError if none does within `timeout_s`.
        (Samples only grow, so the first one that passed stays first.)"""
        if not wait_until(lambda: self.first(after, test) is not None, timeout_s, self.interval_s):
            raise TimeoutError(f"plan never satisfied the condition within {timeout_s:g} s")
        found = self.first(after, test)
        assert found is not None
        return found


class ChaosStage:
    """Fleet + control plane + router for one session; `close()` stops every process."""

    def __init__(self, repo: Path, out: Path, cfg: ChaosConfig) -> None:
        self.repo, self.out, self.cfg = Path(repo), Path(out), cfg
        self.session = cfg.model
        self.fleet: Fleet | None = None
        self.control: Service | None = None
        self.router: Service | None = None
        self.watch: PlanWatch | None = None
        self._control_port = free_port()
        self._router_port = free_port()
        self._stopped: set[int] = set()

    # ---- set-up ---------------------------------------------------------------------

    def start(self, measure: bool = True) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.fleet = start_fleet(self.cfg.servers, self.repo, self.out / "fleet")
        self.fleet.save(self.out / "fleet.json")
        lat = self._measure() if measure else {b: 2.0 + 0.2 * b for b in BATCHES}
        st.write_profiles([(self.cfg.model, lat)], self.fleet, self.out / "profiles.json")
        workload = {
            "sessions": [
                {
                    "id": self.session,
                    "model": self.cfg.model,
                    "slo_ms": self.cfg.slo_ms,
                    "rate": self.cfg.rate,
                }
            ]
        }
        (self.out / "workload.json").write_text(json.dumps(workload))
        self.start_control()
        self.start_router()
        self.watch = PlanWatch(self.control_url, self.session)
        self.watch.start()

    def _measure(self) -> dict[int, float]:
        """l(b) of the model on every server at once (loaded for it, then unloaded again so
        that the control plane starts from an empty fleet)."""
        assert self.fleet is not None
        for g in self.fleet.gpus:
            with TritonServer(g.server) as s:
                s.load(self.cfg.model)
        try:
            return st.measure_latency(self.fleet, self.cfg.model, BATCHES, reps=5)
        finally:
            for g in self.fleet.gpus:
                with TritonServer(g.server) as s:
                    s.unload(self.cfg.model)

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self._control_port}"

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self._router_port}"

    @property
    def infer_url(self) -> str:
        return f"{self.router_url}/v2/models/{self.cfg.model}/infer"

    def start_control(self) -> None:
        args = [
            "control",
            "serve",
            "--fleet",
            str(self.out / "fleet.json"),
            "--repo",
            str(self.repo),
            "--profiles",
            str(self.out / "profiles.json"),
            "--workload",
            str(self.out / "workload.json"),
            "--router",
            self.router_url,
            "--epoch-s",
            f"{self.cfg.epoch_s:g}",
            "--window-s",
            "2",
            "--state",
            str(self.out / "control.sqlite"),
        ]
        self.control = spawn(
            "control", args, self._control_port, "/healthz", self.out / "control.log"
        )

    def start_router(self) -> None:
        args = ["router", "serve", "--control", self.control_url]
        self.router = spawn(
            "router", args, self._router_port, "/v2/health/ready", self.out / "router.log"
        )

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        for svc in (self.router, self.control):
            if svc is not None:
                svc.stop(5)
        if self.fleet is not None:
            for pid in self._stopped:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGCONT)
            stop_fleet(self.fleet, grace_s=5)

    def __enter__(self) -> ChaosStage:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the plan says ---------------------------------------------------------

    def plan(self) -> dict:
        return httpx.get(f"{self.control_url}/v1/plan", timeout=2.0).json()

    def holder(self) -> FleetGpu:
        """A GPU the current plan serves the session on."""
        assert self.fleet is not None
        by_id = self.fleet.by_id()
        for g in self.plan()["gpus"]:
            if any(a["session"] == self.session for a in g["allocations"]):
                return by_id[g["gpu"]]
        raise LookupError(f"the plan serves no {self.session!r}")

    def model_ready(self, gpu: FleetGpu) -> bool:
        try:
            with TritonServer(gpu.server) as s:
                return s.is_model_ready(self.cfg.model)
        except ServerError:
            return False

    # ---- faults ---------------------------------------------------------------------

    def _pid(self, gpu: FleetGpu) -> int:
        assert self.fleet is not None
        pid = self.fleet.by_id()[gpu.id].pid
        assert pid is not None
        return pid

    def kill_server(self, gpu: FleetGpu) -> None:
        os.killpg(self._pid(gpu), signal.SIGKILL)

    def stop_server(self, gpu: FleetGpu) -> None:
        pid = self._pid(gpu)
        self._stopped.add(pid)
        os.killpg(pid, signal.SIGSTOP)

    def cont_server(self, gpu: FleetGpu) -> None:
        pid = self._pid(gpu)
        os.killpg(pid, signal.SIGCONT)
        self._stopped.discard(pid)

    def restart_server(self, gpu: FleetGpu) -> None:
        """Start it again on its ports with no model loaded (after a kill)."""
        assert self.fleet is not None
        self.fleet = restart_server(self.fleet, gpu.id, self.repo)

    def kill_router(self) -> None:
        assert self.router is not None
        self.router.kill()

    def kill_control(self) -> None:
        assert self.control is not None
        self.control.kill()
