"""One term of the control plane (what a replica runs while it leads, `control.replica`):
its store, its fleet (`--fleet`, or discovered: `control.k8s_discovery`), the
`ControlPlane` reading its sessions and last plan back from the store, its HTTP API,
and discovery following the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.endpoints import ServiceRef
from control.service import ControlConfig, ControlPlane
from control.store import Store
from control.types import Workload
from model_repo_tools.fleet import Fleet
from model_repo_tools.profiles import ProfileSet


@dataclass(slots=True)
class TermSpec:
    """What a term runs on: the repository, profiles and workload, the store's path, the
    fleet, the routers whose arrival counters it samples, and the HTTP API's token."""

    repo: Path
    profiles: ProfileSet
    workload: Workload
    state: Path
    fleet: Fleet | Discovered
    routers: list[str] = field(default_factory=list)
    config: ControlConfig = field(default_factory=ControlConfig)
    token: str | None = None


@dataclass(slots=True)
class Discovered:
    """`--fleet-from k8s:NS/SERVICE`: where the fleet comes from and how it qualifies."""

    api_client: Any  # a kubernetes.client.ApiClient
    service: ServiceRef
    gpu_type: str | None = None
    gpu_memory: int | None = None
    wait_s: float = 600.0  # for a first server to qualify
    retry_s: float = 5.0
    watch_timeout_s: int = 300


class ControlTerm:
    def __init__(
        self, cp: ControlPlane, app: Any, stops: list[Any], follow: asyncio.Task[None] | None
    ) -> None:
        self.cp, self.app, self._stops, self._follow = cp, app, stops, follow

    async def stop(self) -> None:
        """Discovery first (it would apply changes), the control plane, then the watch and
        the store."""
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        await self.cp.stop()
        for stop in self._stops:
            await stop()


async def start_term(spec: TermSpec) -> ControlTerm:
    """Open the store, find the fleet, start the control plane on it."""
    from control.api import create_app
    from control.k8s_discovery import FleetDiscovery, SliceWatch

    store = Store(spec.state)
    stops: list[Any] = []

    async def close_store() -> None:
        store.close()

    stops.append(close_store)
    cp: ControlPlane | None = None
    try:
        src = spec.fleet
        discovery = None
        if isinstance(src, Discovered):
            discovery = FleetDiscovery(src.service, src.gpu_type, src.gpu_memory, src.retry_s)
            discovery.bind()
            watch = SliceWatch(
                src.api_client, src.service, discovery.on_slices, src.watch_timeout_s
            )
            watch.start()
            stops.insert(0, lambda: asyncio.to_thread(watch.stop))
            fleet = await discovery.initial(src.wait_s)
        else:
            fleet = src.model_copy(deep=True)  # a term's fleet changes; the spec's does not
        cp = ControlPlane(
            fleet, spec.repo, spec.profiles, store, routers=spec.routers, config=spec.config
        )
        cp.seed(spec.workload)
        app = create_app(cp, spec.token)
        await cp.start()
    except BaseException:  # failed, or cancelled (deposed while starting): undo what started
        if cp is not None:
            with contextlib.suppress(Exception):
                await cp.stop()
        for stop in stops:
            with contextlib.suppress(Exception):
                await stop()
        raise
    assert cp is not None
    follow = None
    if discovery is not None:
        follow = asyncio.get_running_loop().create_task(discovery.follow(cp))
    return ControlTerm(cp, app, stops, follow)
