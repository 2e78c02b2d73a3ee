"""Fleet health's driver: probes feed `control.health.FleetHealth` (pure) on the service's clock.

Every server is probed every `probe_s` (`control.probe`); a router that saw a
batch fail, or an actuator that could not read a server, asks for a probe of
that server at once (`report`). Transitions are counted in the metrics and
handed to `on_change`; a reported server that still answers live is handed to
`on_live_suspect` (it may have restarted between two probes and lost its
models).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from control.clock import Clock
from control.health import FleetHealth, Transition
from control.metrics import ControlMetrics
from control.probe import Prober
from model_repo_tools.fleet import Fleet, FleetGpu
from tnx.errors import UserInputError

log = logging.getLogger(__name__)
Changes = list[tuple[str, Transition]]  # (server, transition), in probe order


class FleetMonitor:
    def __init__(
        self,
        fleet: Fleet,
        clock: Clock,
        metrics: ControlMetrics,
        on_change: Callable[[Changes], None],
        on_live_suspect: Callable[[str], None],
        prober: Prober | None = None,
        probe_timeout_s: float = 1.0,
        rejoin_probes: int = 3,
    ) -> None:
        self.fleet, self.clock, self.metrics = fleet, clock, metrics
        self.health = FleetHealth(
            sorted({g.server for g in fleet.gpus}), rejoin_probes=rejoin_probes
        )
        self._on_change, self._on_live_suspect = on_change, on_live_suspect
        self._prober = prober
        self._probe_timeout_s = probe_timeout_s
        self._reports: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._prober is None:
            self._prober = Prober(self._probe_timeout_s)

    async def close(self) -> None:
        for task in list(self._reports):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._prober is not None:
            await self._prober.close()

    def live_gpus(self) -> set[str]:
        """Ids of the fleet's GPUs whose server may be planned now."""
        return {g.id for g in self.fleet.gpus if self.health.is_up(g.server)}

    def _servers(self, only: set[str] | None = None) -> list[FleetGpu]:
        """One fleet GPU per server (probes are per server), optionally of `only` servers."""
        seen: dict[str, FleetGpu] = {}
        for g in self.fleet.gpus:
            if only is None or g.server in only:
                seen.setdefault(g.server, g)
        return list(seen.values())

    async def run(self, period_s: float) -> None:
        while True:
            await self.clock.sleep(period_s)
            try:
                await self.probe()
            except Exception:  # a broken probe round must not stop the next
                log.exception("fleet probe failed")

    async def probe(self, only: set[str] | None = None) -> Changes:
        """Probe every server (or `only` these) once; the transitions, also to `on_change`."""
        assert self._prober is not None
        targets = self._servers(only)
        results = await asyncio.gather(*(self._prober.live(g) for g in targets))
        now = self.clock.now()
        changed: Changes = []
        for g, (ok, error) in zip(targets, results, strict=True):
            t = self.health.observe(now, g.server, ok, error)
            self.metrics.server(g.server, self.health.is_up(g.server), t)
            if t is not None:
                changed.append((g.server, t))
                if t == "down":
                    log.warning("server %s down: %s", g.server, error)
                else:
                    log.warning("server %s healthy again: planned again", g.server)
        if changed:
            self._on_change(changed)
        return changed

    def depart(self, servers: list[str], why: str) -> Changes:
        """Servers that left the fleet (fleet discovery): down now, as a failed probe
        would make them, and not probed any more (they are out of the fleet)."""
        now = self.clock.now()
        changed: Changes = []
        for server in servers:
            t = self.health.observe(now, server, False, why)
            self.metrics.server(server, False, t)
            if t is not None:
                changed.append((server, t))
        if changed:
            self._on_change(changed)
        return changed

    def forget(self, servers: list[str]) -> None:
        """Servers gone for good: no longer down, so the outage they began is over."""
        for server in servers:
            self.health.forget(server)
            with contextlib.suppress(KeyError):
                self.metrics.server_up.remove(server)

    def report(self, gpu_id: str, healthy: bool, error: str = "") -> bool:
        """A router's view of a GPU: a failed batch asks for a probe of its server now.
        Returns whether a probe was started."""
        gpu = self.fleet.by_id().get(gpu_id)
        if gpu is None:
            raise UserInputError(f"gpu {gpu_id!r} is not in the fleet")
        if healthy or self._prober is None or not self.health.suspect(gpu.server):
            return False
        log.info("router reports %s failing: %s", gpu_id, error)
        task = asyncio.get_running_loop().create_task(self._check_reported(gpu.server))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)
        return True

    async def _check_reported(self, server: str) -> None:
        await self.probe({server})
        if self.health.is_up(server):
            # Live, yet a batch failed there: a server restarted between two probes
            # answers live with none of its models.
            self._on_live_suspect(server)
