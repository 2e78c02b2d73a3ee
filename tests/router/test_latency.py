"""router.latency: the fitted correction l̂(b) = scale·l(b) + overhead + spread·σ, and the lock-out
it must never cause (issue 8), on a manual clock and in the simulator."""

from __future__ import annotations

import math
import random

import pytest

from router.latency import LatencyModel
from router.policy import BatchPolicy
from router.simulator import Simulator
from router.testing import curves, plan
from router.types import Answered, Request

CURVE = {1: 1.0, 8: 2.0, 32: 5.0}


def _model(**kw: float) -> LatencyModel:
    return LatencyModel(curves(m=CURVE), **kw)


def _feed(lm: LatencyModel, truth, sizes=(1, 4, 8, 16, 32), rounds: int = 10, t0: float = 0.0):
    now = t0
    for _ in range(rounds):
        for b in sizes:
            now += 1.0
            lm.observe("g", "t", "m", b, truth(b), now)
    return now


def test_no_observation_is_the_profile() -> None:
    lm = _model()
    assert lm.estimate("g", "t", "m", 8, 0.0) == 2.0


def test_an_estimator_held_before_the_first_observation_follows_the_fit() -> None:
    """The policy holds each (GPU, model)'s Estimator from the plan's start; the fit made
    later, also from a batch of the GPU's previous type (a plan switch that changed it),
    must reach every estimator of that GPU and model."""
    lm = LatencyModel(curves(m=CURVE) | {("m", "u"): curves(m=CURVE)[("m", "t")]}, spread=0.0)
    held, other_type = lm.estimator("g", "t", "m"), lm.estimator("g", "u", "m")
    elsewhere = lm.estimator("h", "t", "m")
    assert lm.estimator("g", "t", "m") is held
    lm.observe("g", "u", "m", 8, 6.0, 1.0)
    assert held.estimate(8, 1.0) == pytest.approx(6.0) == other_type.estimate(8, 1.0)
    assert held.estimate(8, 1.0) == lm.estimate("g", "t", "m", 8, 1.0)
    assert elsewhere.estimate(8, 1.0) == 2.0  # another GPU keeps its profile


def test_fixed_overhead_is_added_not_multiplied() -> None:
    lm = _model(spread=0.0)
    lat = curves(m=CURVE)[("m", "t")].latency
    now = _feed(lm, lambda b: lat(b) + 3.0)
    for b in (1, 8, 32):
        assert lm.estimate("g", "t", "m", b, now) == pytest.approx(lat(b) + 3.0, rel=0.02)
    c = lm.correction("g", "m", now)
    assert c.scale == pytest.approx(1.0, abs=0.05) and c.overhead_ms == pytest.approx(3.0, abs=0.1)


def test_a_slower_card_scales() -> None:
    lm = _model(spread=0.0)
    lat = curves(m=CURVE)[("m", "t")].latency
    now = _feed(lm, lambda b: 2.0 * lat(b))
    assert lm.estimate("g", "t", "m", 32, now) == pytest.approx(10.0, rel=0.05)
    assert lm.estimate("g", "t", "m", 1, now) == pytest.approx(2.0, rel=0.1)


def test_one_batch_size_reads_the_difference_as_overhead() -> None:
    lm = _model(spread=0.0)
    now = _feed(lm, lambda b: 6.0, sizes=(8,))
    c = lm.correction("g", "m", now)
    assert c.scale == pytest.approx(1.0) and c.overhead_ms == pytest.approx(4.0)
    # Never above the planned batch, the window's batches are then over-, not under-estimated.
    assert lm.estimate("g", "t", "m", 1, now) == pytest.approx(5.0)


def test_noise_is_planned_for_at_two_sigma() -> None:
    lm = _model(spread=2.0)
    rng = random.Random(1)
    now = _feed(lm, lambda b: 10.0 + rng.gauss(0.0, 1.0), sizes=(8,), rounds=200)
    c = lm.correction("g", "m", now)
    assert 0.5 < c.sigma_ms < 1.6
    assert lm.estimate("g", "t", "m", 8, now) == pytest.approx(2.0 + c.overhead_ms + 2 * c.sigma_ms)


def test_the_correction_fades_without_evidence() -> None:
    lm = _model(decay_ms=1000.0)
    now = _feed(lm, lambda b: 50.0)
    assert lm.estimate("g", "t", "m", 1, now) > 40.0
    assert lm.estimate("g", "t", "m", 1, now + 1000.0) == pytest.approx(
        1.0 + math.exp(-1.0) * (lm.estimate("g", "t", "m", 1, now) - 1.0)
    )
    assert lm.estimate("g", "t", "m", 1, now + 10_000.0) < 1.01


def test_good_news_is_believed_at_once() -> None:
    lm = _model()
    now = _feed(lm, lambda b: 100.0)
    lm.observe("g", "t", "m", 1, 1.2, now + 1.0)
    assert lm.estimate("g", "t", "m", 1, now + 1.0) == pytest.approx(1.2)


def test_bad_news_moves_it_by_alpha() -> None:
    lm = _model(alpha=0.2, spread=0.0)
    lm.observe("g", "t", "m", 8, 2.0, 0.0)
    lm.observe("g", "t", "m", 8, 12.0, 0.0)
    assert lm.estimate("g", "t", "m", 8, 0.0) == pytest.approx(2.0 + 0.2 * 10.0)


def _lockout_run(
    policy: BatchPolicy, slow_until: float, end: float, rate_hi: float, rate_lo: float
):
    """Phase 1 (to `slow_until`): every batch takes 60x its profile (a 2-core machine under a
    load generator, the router and Triton at once), at `rate_hi`; phase 2: the profile plus
    0.5 ms of RPC, at `rate_lo`."""
    sim: Simulator
    lat = curves(m=CURVE)[("m", "t")].latency

    def latency(gpu: str, model: str, n: int) -> float:
        return lat(n) * 60.0 if sim._now < slow_until else lat(n) + 0.5

    rng = random.Random(3)
    arrivals, t, i = [], 0.0, 0
    while t < end:
        rate = rate_hi if t < slow_until else rate_lo
        t += rng.expovariate(rate / 1000.0)
        arrivals.append(Request(i, "s", t, t + 50.0))
        i += 1
    sim = Simulator(policy, latency)
    return sim.run(arrivals)


def test_after_an_overload_a_session_serves_again_within_5_s() -> None:
    """The lock-out of issue 8, replayed: once nothing fits the SLO, the old multiplicative
    correction never saw another batch and dropped every request for ever."""
    p = BatchPolicy(plan(("g0", 20.0, [("s", "m", 32, 50.0)])), curves(m=CURVE))
    res = _lockout_run(p, slow_until=3000.0, end=13_000.0, rate_hi=500.0, rate_lo=20.0)
    late_phase = [o for o in res.outcomes if o.request.arrival >= 3000.0 + 5000.0]
    assert len(late_phase) > 50
    on_time = sum(1 for o in late_phase if isinstance(o, Answered) and not o.late)
    assert on_time / len(late_phase) >= 0.99
    # The slow phase did drive the estimate past the SLO (the test replays a real lock-out).
    assert any(o.request.arrival < 3000.0 and not isinstance(o, Answered) for o in res.outcomes)
