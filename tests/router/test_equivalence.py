"""One trace through both drivers of the policy gives the same dispatches and drops.

The simulator runs its own event heap; the asyncio driver runs on a VirtualClock
against FakeBackend, whose batches take the same (seeded, noisy) times.
"""

from __future__ import annotations

import pytest

from control.types import Plan
from router.clock import VirtualClock
from router.driver import AsyncRouter
from router.policy import BatchPolicy
from router.simulator import Simulator, poisson_arrivals, profile_latency
from router.testing import FakeBackend, curves, plan
from router.types import Answered, Dispatch, Drop, Dropped, Request


def _plan() -> Plan:
    p = plan(
        ("g0", 20.0, [("a", "m", 8, 50.0), ("b", "m", 4, 40.0)]),
        ("g1", 20.0, [("a", "m", 8, 50.0)]),
    )
    for g in p.gpus:
        for al in g.allocations:
            al.rate = 300.0 if al.session == "a" else 150.0
    return p


def _copy(trace: list[Request]) -> list[Request]:
    return [Request(r.id, r.session, r.arrival, r.deadline, r.n_samples) for r in trace]


@pytest.mark.parametrize(("mode", "load"), [("early", 1.6), ("lazy", 1.6), ("none", 0.9)])
async def test_simulator_and_asyncio_driver_agree(mode: str, load: float) -> None:
    p = _plan()
    trace = poisson_arrivals(p, 2_000.0, load=load, seed=11)

    def latency():  # the same seeded noise for both runs
        return profile_latency(p, curves(), speed=1.2, noise_cv=0.2, seed=5)

    sim = Simulator(BatchPolicy(p, curves(), drop=mode), latency()).run(_copy(trace))  # type: ignore[arg-type]

    clock = VirtualClock()
    seen: list[tuple[float, object]] = []
    router = AsyncRouter(
        BatchPolicy(p, curves(), drop=mode),  # type: ignore[arg-type]
        FakeBackend(clock, latency()),
        clock=clock,
        on_event=lambda now, e: seen.append((now, e)),
    )
    futs = []
    for r in _copy(trace):
        clock.call_at(r.arrival, lambda r=r: futs.append(router.submit(r)))
    await clock.run()
    await router.shutdown()

    def key_d(t: float, d: Dispatch) -> tuple:
        return (round(t, 9), d.gpu, d.session, tuple(r.id for r in d.requests))

    def key_x(t: float, x: Drop) -> tuple:
        return (round(t, 9), x.request.id, x.reason)

    assert [key_d(t, d) for t, d in seen if isinstance(d, Dispatch)] == [
        key_d(t, d) for t, d in sim.dispatches
    ]
    assert [key_x(t, x) for t, x in seen if isinstance(x, Drop)] == [
        key_x(t, x) for t, x in sim.drops
    ]
    assert len(sim.dispatches) > 50 and (mode == "none" or len(sim.drops) > 20)

    outs = {f.result().request.id: f.result() for f in futs}
    assert len(outs) == len(trace)
    for o in sim.outcomes:
        a = outs[o.request.id]
        assert type(a) is type(o)
        if isinstance(o, Answered):
            assert isinstance(a, Answered) and a.finished == pytest.approx(o.finished)
        else:
            assert isinstance(a, Dropped) and a.reason == o.reason
