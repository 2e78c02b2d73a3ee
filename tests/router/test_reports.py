"""router.reports: what is reported when (manual clock, fake poster), and the wiring of
`create_app(service, control=URL)` to a stand-in control plane on a loopback socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from model_repo_tools.fleet import Fleet, FleetGpu
from router.app import RouterService, create_app
from router.driver import BatchEnded, GpuUp
from router.reports import ControlPoster, HealthReports
from router.testing import StubBackend, curves, plan
from router.types import Dispatch, Request
from tests.waiting import until


def _failed(gpu: str, error: str = "g: connection refused") -> BatchEnded:
    d = Dispatch(gpu, "s", "m", (Request(0, "s", 0.0, 50.0),), 0, 1, 5.0)
    return BatchEnded(d, "failed", 0.0, 1.0, error)


def test_failures_are_reported_at_most_once_per_gpu_per_second() -> None:
    sent: list[dict] = []
    reports = HealthReports(sent.append)
    reports.on_event(0.0, _failed("g0", "g0: connection refused\nmore detail"))
    reports.on_event(10.0, _failed("g1"))
    reports.on_event(500.0, _failed("g0"))  # within a second of g0's last report
    reports.on_event(999.0, _failed("g0"))
    reports.on_event(1000.0, _failed("g0", "g0: batch timed out after 60 ms"))
    assert sent == [
        {"gpu": "g0", "healthy": False, "error": "g0: connection refused"},
        {"gpu": "g1", "healthy": False, "error": "g: connection refused"},
        {"gpu": "g0", "healthy": False, "error": "g0: batch timed out after 60 ms"},
    ]


def test_a_gpu_back_up_is_reported_and_its_next_failure_is_news() -> None:
    sent: list[dict] = []
    reports = HealthReports(sent.append)
    reports.on_event(0.0, _failed("g0"))
    reports.on_event(300.0, GpuUp("g0"))
    reports.on_event(400.0, _failed("g0"))
    ok = BatchEnded(_failed("g0").dispatch, "ok", 500.0, 505.0)
    reports.on_event(505.0, ok)  # neither ok nor rejected batches are reported
    reports.on_event(506.0, BatchEnded(ok.dispatch, "rejected", 505.0, 506.0, "bad shape"))
    assert [(r["gpu"], r["healthy"]) for r in sent] == [
        ("g0", False),
        ("g0", True),
        ("g0", False),
    ]


# ---- the wiring, with a control plane stand-in ------------------------------------------


class _Control:
    """Answers POST /v1/fleet/reports with 202 (recording the body), anything else 503."""

    def __init__(self) -> None:
        self.reports: list[dict] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if lines[0].startswith("POST /v1/fleet/reports "):
                    self.reports.append(json.loads(body))
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


class _DeadThenBack(StubBackend):
    """A backend whose server refuses every batch, and is ready again once `back`."""

    def __init__(self) -> None:
        self.back = False
        self.probed: list[tuple[str, list[str]]] = []

    async def infer(
        self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
    ) -> list[object]:
        raise ConnectionError("connection refused")

    async def ready(self, gpu: str, models: Sequence[str]) -> bool:
        self.probed.append((gpu, list(models)))
        return self.back


async def test_a_router_following_a_control_plane_reports_failures_and_recovery() -> None:
    control = _Control()
    url = await control.start()
    fleet = Fleet(gpus=[FleetGpu(id="g0", gpu_type="t", memory_bytes=1, server="127.0.0.1:1")])
    backend = _DeadThenBack()
    service = RouterService(
        plan(("g0", 20.0, [("s", "m", 4, 50.0), ("s2", "n", 4, 50.0)])),
        fleet,
        curves(m={1: 5.0, 8: 12.0}, n={1: 5.0, 8: 12.0}),
        backend=backend,
    )
    app = create_app(service, control=url)
    try:
        async with app.router.lifespan_context(app):
            assert service.router is not None
            out = await service.router.infer("s")
            assert getattr(out, "reason", None) == "server_down"
            await until(lambda: len(control.reports) == 1, 5.0)
            (report,) = control.reports
            assert report["gpu"] == "g0" and report["healthy"] is False
            assert "connection refused" in report["error"]
            backend.back = True
            await until(lambda: len(control.reports) == 2, 5.0)  # the probe runs every 500 ms
            assert control.reports[1] == {"gpu": "g0", "healthy": True}
            assert service.router.policy.is_up("g0")
            # The probe asked for every model the plan runs on the GPU.
            assert backend.probed[-1] == ("g0", ["m", "n"])
    finally:
        await control.stop()


async def test_a_control_plane_that_is_down_costs_nothing() -> None:
    poster = ControlPoster("http://127.0.0.1:9", timeout_s=0.2)  # discard port: refused
    for i in range(3):
        poster({"gpu": f"g{i}", "healthy": False, "error": "x"})
    await asyncio.sleep(0.3)
    await poster.aclose()
