"""Test helpers for the router: small plans and curves, action filters, stand-in backends.

Kept in the package (like starlette.testclient) so that tests of the HTTP layer
and the CLI can build a policy in one line too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from control.types import Plan
from model_repo_tools.fleet import Fleet
from model_repo_tools.profiles import LatencyCurve
from router.clock import VirtualClock
from router.policy import BatchPolicy
from router.simulator import SimResult
from router.types import Action, Dispatch, Drop, DropMode, Request, WakeAt
from tnx.errors import ServerError

# l(1)=5, l(4)=8, l(8)=12 ms: a typical sub-linear batch curve.
CURVE = {1: 5.0, 4: 8.0, 8: 12.0}


def curves(**models: dict[int, float]) -> dict[tuple[str, str], LatencyCurve]:
    """{(model, "t"): curve}; defaults to model "m" with CURVE."""
    models = models or {"m": CURVE}
    return {(m, "t"): LatencyCurve.from_points(m, "t", pts) for m, pts in models.items()}


def plan(*gpus: tuple[str, float, list[tuple[str, str, int, float]]]) -> Plan:
    """plan(("g0", duty, [(session, model, batch, slo), ...]), ...) on gpu type "t"."""
    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": gid,
                    "gpu_type": "t",
                    "duty_cycle_ms": duty,
                    "allocations": [
                        {"session": s, "model": m, "batch": b, "rate": 10.0, "slo_ms": slo}
                        for s, m, b, slo in allocs
                    ],
                }
                for gid, duty, allocs in gpus
            ]
        }
    )


def one_gpu_policy(batch: int = 4, slo: float = 50.0, drop: DropMode = "early") -> BatchPolicy:
    return BatchPolicy(plan(("g0", 20.0, [("s", "m", batch, slo)])), curves(), drop=drop)


def dispatches(actions: list[Action]) -> list[Dispatch]:
    return [a for a in actions if isinstance(a, Dispatch)]


def drops(actions: list[Action]) -> list[Drop]:
    return [a for a in actions if isinstance(a, Drop)]


def wakes(actions: list[Action]) -> list[float]:
    return [a.time for a in actions if isinstance(a, WakeAt)]


def ids(d: Dispatch) -> list[int | str]:
    return [r.id for r in d.requests]


def drops_by_reason(actions: Iterable[Action]) -> dict[str, int]:
    """Count the Drop actions in `actions` per reason."""
    counts: dict[str, int] = {}
    for a in actions:
        if isinstance(a, Drop):
            counts[a.reason] = counts.get(a.reason, 0) + 1
    return counts


class StubBackend:
    """A `router.backend.Backend` with no servers behind it: every server is ready, none
    describes a model (ServerError) and no batch runs. Subclass it for the part a test
    exercises."""

    async def infer(
        self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
    ) -> Sequence[Any]:
        raise ServerError(f"{gpu}: no server behind the stub backend")

    async def ready(self, gpu: str, models: Iterable[str] = ()) -> bool:
        return True

    async def metadata(self, gpu: str, model: str) -> tuple[dict[str, Any], int]:
        raise ServerError(f"{gpu}: the stub backend describes no model")

    async def model_config(self, gpu: str, model: str) -> dict[str, Any]:
        raise ServerError(f"{gpu}: the stub backend configures no model")

    def set_fleet(self, fleet: Fleet) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeBackend(StubBackend):
    """A Backend on a VirtualClock: a batch of n samples takes `latency(gpu, model, n)` ms.

    `fail[gpu]` is raised (instead of running) while set; `hang` GPUs never answer (and
    neither is ready). Each answer is `(gpu, request.id)`; `timeouts` records each call's
    `timeout_s`.
    """

    def __init__(self, clock: VirtualClock, latency: Callable[[str, str, int], float]) -> None:
        self.clock = clock
        self.latency = latency
        self.fail: dict[str, Exception] = {}
        self.hang: set[str] = set()
        self.calls: list[tuple[float, str, list[int | str]]] = []
        self.timeouts: list[float | None] = []

    async def infer(
        self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
    ) -> list[object]:
        self.calls.append((self.clock.now(), gpu, [r.id for r in batch]))
        self.timeouts.append(timeout_s)
        if gpu in self.fail:
            raise self.fail[gpu]
        if gpu in self.hang:
            await asyncio.Event().wait()
        await self.clock.sleep(self.latency(gpu, model, sum(r.n_samples for r in batch)))
        return [(gpu, r.id) for r in batch]

    async def ready(self, gpu: str, models: Iterable[str] = ()) -> bool:
        return gpu not in self.fail and gpu not in self.hang


def curve_latency(
    c: dict[tuple[str, str], LatencyCurve], gpu_type: str = "t", scale: float = 1.0
) -> Callable[[str, str, int], float]:
    """latency(gpu, model, n) = scale * l(n) from curves of one gpu type."""
    return lambda gpu, model, n: scale * c[(model, gpu_type)].latency(n)


def eventful_run(policy: type[BatchPolicy] = BatchPolicy, mode: DropMode = "early") -> SimResult:
    """One simulated run through every kind of event: three GPUs shared by four sessions
    at 1.6x their planned rates, noise and uneven speeds, outages (one for good), a plan
    switch and a shutdown; `policy` may be a subclass of BatchPolicy."""
    from router.simulator import Outage, Simulator, poisson_arrivals, profile_latency

    p = plan(
        ("g0", 20.0, [("a", "m", 8, 50.0), ("b", "m", 4, 40.0), ("c", "n", 4, 30.0)]),
        ("g1", 15.0, [("a", "m", 8, 50.0), ("c", "n", 8, 45.0)]),
        ("g2", 25.0, [("d", "n", 4, 60.0)]),
    )
    for g in p.gpus:
        for a in g.allocations:
            a.rate = 200.0
    later = p.model_copy(deep=True)
    later.gpus = later.gpus[1:]
    cv = curves(m={1: 5.0, 4: 8.0, 8: 12.0}, n={1: 3.0, 4: 6.0, 8: 11.0})
    lat = profile_latency(p, cv, speed={"g0": 1.3, "g1": 0.8}, noise_cv=0.3, seed=3)
    return Simulator(policy(p, cv, drop=mode), lat).run(
        poisson_arrivals(p, 3_000.0, load=1.6, seed=7),
        outages=[Outage("g1", 500, 900), Outage("g0", 1200, 1250), Outage("g2", 2500)],
        switches=[(2000.0, later)],
        shutdown_at=2900.0,
    )
