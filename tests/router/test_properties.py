"""Invariants of the policy over random plans, traces, slow servers, outages and plan switches.

- none is lost: every request ends in exactly one answer or one drop (the
  simulator raises on a missing, doubled or contradictory outcome);
- under `early`, no request is dispatched when now + l(its batch) > its deadline,
  l being the policy's corrected estimate at that moment; with an honest profile
  that means no answer is late at all;
- one batch in flight per GPU; at most the planned batch unless one request is larger;
- the asyncio driver answers every submitted request exactly once, whatever the
  backend does (fails, refuses, hangs past the timeout) and also at shutdown.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.types import Plan
from router.backend import BatchRejectedError
from router.clock import VirtualClock
from router.driver import AsyncRouter
from router.policy import BatchPolicy
from router.simulator import Outage, Simulator, profile_latency
from router.testing import FakeBackend, curves
from router.types import Answered, Dropped, Request

CURVES = curves(m={1: 5.0, 4: 8.0, 8: 12.0}, n={1: 2.0, 2: 3.0, 16: 20.0})
SESSIONS = {"a": "m", "b": "m", "c": "n"}


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    gpus = []
    slos = {s: draw(st.floats(8.0, 120.0)) for s in SESSIONS}
    for i in range(draw(st.integers(1, 3))):
        chosen = draw(st.lists(st.sampled_from(sorted(SESSIONS)), max_size=3, unique=True))
        gpus.append(
            {
                "gpu": f"g{i}",
                "gpu_type": "t",
                "duty_cycle_ms": draw(st.floats(5.0, 60.0)),
                "allocations": [
                    {
                        "session": s,
                        "model": SESSIONS[s],
                        "batch": draw(st.integers(1, 8)),
                        "rate": 100.0,
                        "slo_ms": slos[s],
                    }
                    for s in chosen
                ],
            }
        )
    return Plan.model_validate({"gpus": gpus})


@st.composite
def traces(draw: st.DrawFn) -> list[Request]:
    n = draw(st.integers(0, 80))
    gaps = draw(st.lists(st.floats(0.0, 6.0), min_size=n, max_size=n))
    out, t = [], 0.0
    for i, gap in enumerate(gaps):
        t += gap
        s = draw(st.sampled_from(["a", "a", "b", "c", "zzz"]))
        slo = draw(st.floats(1.0, 120.0))
        out.append(Request(i, s, t, t + slo, draw(st.integers(1, 3))))
    return out


scenarios = st.fixed_dictionaries(
    {
        "plan": plans(),
        "trace": traces(),
        "mode": st.sampled_from(["early", "lazy", "none"]),
        "speed": st.sampled_from([1.0, 1.0, 0.6, 1.7]),
        "noise": st.sampled_from([0.0, 0.0, 0.3]),
        "outages": st.lists(
            st.tuples(st.sampled_from(["g0", "g1", "g2"]), st.floats(0, 300), st.floats(1, 200)),
            max_size=3,
        ),
        "switch": st.one_of(st.none(), st.tuples(st.floats(0, 300), plans())),
        "shutdown_at": st.one_of(st.none(), st.floats(0, 400)),
    }
)


def _run(sc: dict):  # noqa: ANN202
    policy = BatchPolicy(sc["plan"], CURVES, drop=sc["mode"])
    latency = profile_latency(sc["plan"], CURVES, speed=sc["speed"], noise_cv=sc["noise"], seed=3)
    if sc["switch"] is not None:
        # The second plan's GPUs need the simulator to know their types too.
        both = Plan(gpus=[*sc["plan"].gpus, *sc["switch"][1].gpus])
        latency = profile_latency(both, CURVES, speed=sc["speed"], noise_cv=sc["noise"], seed=3)
    return Simulator(policy, latency).run(
        sc["trace"],
        outages=[Outage(g, t, t + d) for g, t, d in sc["outages"]],
        switches=[] if sc["switch"] is None else [sc["switch"]],
        shutdown_at=sc["shutdown_at"],
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_invariants(sc: dict) -> None:
    res = _run(sc)  # raises if any request is lost, answered twice, or answered and dropped
    assert len(res.outcomes) == len(sc["trace"])
    dropped = [x.request.id for _, x in res.drops]
    assert len(dropped) == len(set(dropped))

    if sc["mode"] == "early":
        for t, d in res.dispatches:
            for r in d.requests:
                assert t + d.expected_ms <= r.deadline + 1e-9, (t, d, r)
        if sc["speed"] == 1.0 and sc["noise"] == 0.0:
            assert all(not getattr(o, "late", False) for o in res.outcomes)

    ends: dict[str, float] = {}
    for started, ended, d, _ in sorted(res.batches, key=lambda b: b[0]):
        assert started >= ends.get(d.gpu, -1.0), f"two batches in flight on {d.gpu}"
        ends[d.gpu] = ended
    planned: dict[tuple[str, str], int] = {}  # the larger batch, when a switch changed it
    for p in [sc["plan"]] + ([sc["switch"][1]] if sc["switch"] else []):
        for g in p.gpus:
            for a in g.allocations:
                key = (g.gpu, a.session)
                planned[key] = max(planned.get(key, 0), a.batch)
    for _, d in res.dispatches:
        assert d.n_samples <= planned[(d.gpu, d.session)] or len(d.requests) == 1


@settings(max_examples=40, deadline=None)
@given(
    plan=plans(),
    trace=traces(),
    mode=st.sampled_from(["early", "lazy", "none"]),
    faults=st.lists(st.sampled_from(["ok", "ok", "ok", "fail", "reject", "hang"]), min_size=1),
    seed=st.integers(0, 2**16),
)
async def test_asyncio_driver_answers_every_request_once_despite_faults(
    plan: Plan, trace: list[Request], mode: str, faults: list[str], seed: int
) -> None:
    clock = VirtualClock()
    rng = random.Random(seed)

    class Flaky(FakeBackend):
        async def infer(
            self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
        ) -> list[object]:
            fault = rng.choice(faults)
            if fault == "fail":
                raise ConnectionError("boom")
            if fault == "reject":
                raise BatchRejectedError("bad input")
            if fault == "hang":
                await clock.sleep(1e9)
            return await super().infer(gpu, model, batch)

    async def health(gpu: str) -> bool:
        return rng.random() < 0.5

    router = AsyncRouter(
        BatchPolicy(plan, CURVES, drop=mode),  # type: ignore[arg-type]
        Flaky(clock, profile_latency(plan, CURVES)),
        clock=clock,
        health=health,
        probe_interval_ms=20.0,
        grace_ms=50.0,
    )
    futs: list[asyncio.Future] = []
    for r in trace:
        clock.call_at(r.arrival, lambda r=r: futs.append(router.submit(r)))
    await clock.run(until=1_000.0)
    stopping = asyncio.ensure_future(router.shutdown(grace_ms=100.0))
    await clock.run(until=1_200.0)
    await stopping
    assert len(futs) == len(trace) and router.pending() == 0
    outs = [f.result() for f in futs]
    assert {o.request.id for o in outs} == {r.id for r in trace}
    assert all(isinstance(o, Answered | Dropped) for o in outs)
