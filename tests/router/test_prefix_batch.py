"""Prefix batching in the router (router.prefix_batch, router.dispatching): one prefix batch
mixing two sessions' requests, suffixes per session, early drop on the whole path."""

from __future__ import annotations

import asyncio

import numpy as np

from router.policy import BatchPolicy
from router.prefix_batch import run_path, stages
from router.simulator import Simulator, poisson_arrivals, profile_latency
from router.testing import curves, dispatches, drops, plan
from router.types import Answered, Dispatch, Request

P = "prefix_0123456789ab"
FLAT = {1: 1.0, 8: 2.0}


def _curves() -> dict:
    return curves(
        **{
            "a": {1: 4.2, 8: 30.0},
            "b": {1: 6.0, 8: 12.0},
            P: {1: 4.0, 16: 8.0},
            f"{P}__a": FLAT,
            f"{P}__b": FLAT,
            "m": {1: 5.0, 8: 12.0},
        }
    )


def _policy(slo: float = 50.0, drop: str = "early") -> BatchPolicy:
    allocs = [("sa", "a", 4, slo), ("sb", "b", 4, slo), ("sm", "m", 4, slo)]
    return BatchPolicy(plan(("g0", 20.0, allocs)), _curves(), drop=drop)  # type: ignore[arg-type]


def test_one_prefix_batch_mixes_both_sessions_then_each_suffix() -> None:
    p = _policy()
    first = dispatches(p.arrival(0.0, p.request(0, "sm", 0.0)))  # the GPU is now busy
    assert [d.model for d in first] == ["m"]
    for i, s in enumerate(["sa", "sb", "sa", "sb", "sb"]):
        assert dispatches(p.arrival(0.1, p.request(i + 1, s, 0.1))) == []
    (d,) = dispatches(p.batch_done(5.0, "g0", first[0].batch_id))
    assert d.model == P and d.n_samples == 5
    assert d.suffixes == ((f"{P}__a", 2), (f"{P}__b", 3))
    assert [r.session for r in d.requests] == ["sa", "sa", "sb", "sb", "sb"]
    assert stages(d) == [(P, 5), (f"{P}__a", 2), (f"{P}__b", 3)]
    # The whole path: l_P(5) + l_Sa(2) + l_Sb(3).
    assert abs(d.expected_ms - (4.0 + 4 * 4 / 15 + 1 + 1 / 7 + 1 + 2 / 7)) < 1e-9


def test_early_drop_judges_the_whole_path() -> None:
    # l_P(1) + l_S(1) = 5 ms: a request with 4.5 ms left is dropped, not sent, though its
    # model whole (4.2 ms) would pass the door and the prefix alone (4 ms) would make it.
    p = _policy()
    out = p.arrival(0.0, Request(0, "sa", 0.0, 4.5))
    assert dispatches(out) == [] and [x.reason for x in drops(out)] == ["deadline"]


def test_sessions_run_whole_where_a_prefix_batch_would_break_their_slo() -> None:
    # d + l_P(8) + 2 l_S(4) = 28.7 ms > 25: the rule (control.prefix_rule) runs them whole.
    p = _policy(slo=25.0)
    out = p.arrival(0.0, p.request(0, "sa", 0.0))
    assert [d.model for d in dispatches(out)] == ["a"]


def test_the_simulator_serves_both_sessions_through_prefix_batches() -> None:
    p = _policy(slo=100.0)
    pl = plan(("g0", 20.0, [("sa", "a", 4, 100.0), ("sb", "b", 4, 100.0)]))
    arrivals = poisson_arrivals(pl, 2000.0, load=20.0, seed=1)  # 200 req/s each
    result = Simulator(p, profile_latency(pl, _curves())).run(arrivals)
    served = [o for o in result.outcomes if isinstance(o, Answered)]
    assert len(served) > 0.95 * len(arrivals)
    mixed = [d for _, d in result.dispatches if d.suffixes and len(d.suffixes) == 2]
    assert mixed, "no prefix batch held both sessions"


class _Backend:
    """Adds 1 in the prefix, multiplies by 10 in suffix a, by 100 in suffix b."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def infer(
        self, gpu: str, model: str, batch: tuple[Request, ...], *, timeout_s: float | None = None
    ) -> list[dict[str, np.ndarray]]:
        self.calls.append((model, len(batch)))
        if model == P:
            return [{"shared_0": r.payload["input"] + 1} for r in batch]
        k = 10 if model.endswith("a") else 100
        return [{"output": r.payload["shared_0"] * k} for r in batch]


def test_run_path_feeds_each_suffix_its_requests_slices() -> None:
    reqs = tuple(
        Request(i, s, 0.0, 50.0, payload={"input": np.array([[float(i)]])})
        for i, s in enumerate(["sa", "sb", "sb"])
    )
    d = Dispatch("g0", "sa", P, reqs, 0, 3, 5.0, ((f"{P}__a", 1), (f"{P}__b", 2)))
    backend = _Backend()
    out = asyncio.run(run_path(backend, d))  # type: ignore[arg-type]
    assert [float(o["output"][0, 0]) for o in out] == [10.0, 200.0, 300.0]
    assert backend.calls == [(P, 3), (f"{P}__a", 1), (f"{P}__b", 2)]
