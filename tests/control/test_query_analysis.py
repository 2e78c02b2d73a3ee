"""Query analysis (Nexus §6.2): the DP's split matches brute force and beats an even split."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.workloads import synthetic_profiles
from control.problem import pool
from control.query_analysis import even_split, split_slo, stage_rates
from control.scheduler import schedule_workload, workload_sessions
from control.tables import BatchTable
from control.types import Query, Stage, Workload
from control.validate import validate_plan

STEPS = 8


def brute_force(q: Query, need, steps: int) -> float:
    unit = q.slo_ms / steps
    rates = stage_rates(q)
    by_id = {s.id: s for s in q.stages}
    best = math.inf
    for units in itertools.product(range(1, steps + 1), repeat=len(q.stages)):
        share = dict(zip((s.id for s in q.stages), units, strict=True))

        def path(s: Stage, share: dict[str, int] = share) -> int:
            return share[s.id] + (0 if s.after is None else path(by_id[s.after], share))

        if any(path(s) > steps for s in q.stages):
            continue
        best = min(best, sum(need(s, rates[s.id], share[s.id] * unit) for s in q.stages))
    return best


@st.composite
def trees(draw):
    n = draw(st.integers(1, 4))
    stages = [Stage(id="s0", model="m0")]
    for i in range(1, n):
        parent = draw(st.integers(0, i - 1))
        fanout = draw(st.sampled_from([0.5, 1.0, 2.0, 3.5]))
        stages.append(Stage(id=f"s{i}", model=f"m{i % 3}", after=f"s{parent}", fanout=fanout))
    slo = draw(st.sampled_from([40.0, 100.0, 300.0]))
    rate = draw(st.sampled_from([10.0, 200.0, 2000.0]))
    return Query(id="q", slo_ms=slo, rate=rate, stages=stages)


PS = synthetic_profiles(7, 3)
TABLES = {
    p.model: BatchTable.from_curve(c)
    for (p, c) in zip(PS.profiles, PS.curves().values(), strict=True)
}


def need(stage: Stage, rate: float, budget: float) -> float:
    return TABLES[stage.model].need(rate, budget)


@settings(max_examples=40, deadline=None)
@given(trees())
def test_dp_matches_brute_force(q):
    budgets, total = split_slo(q, need, STEPS)
    assert total == pytest.approx(brute_force(q, need, STEPS)) or math.isinf(total)
    if math.isfinite(total):
        rates = stage_rates(q)
        assert total == pytest.approx(sum(need(s, rates[s.id], budgets[s.id]) for s in q.stages))
        by_id = {s.id: s for s in q.stages}
        for s in q.stages:
            t, cur = 0.0, s
            while cur is not None:
                t += budgets[cur.id]
                cur = by_id.get(cur.after) if cur.after else None
            assert t <= q.slo_ms + 1e-9


def test_dp_beats_even_split_on_unequal_stages():
    # A heavy detector feeding a light classifier with fanout: the detector deserves more.
    q = Query(
        id="traffic",
        slo_ms=60.0,
        rate=400.0,
        stages=[
            Stage(id="det", model="m0"),
            Stage(id="car", model="m1", after="det", fanout=3.0),
        ],
    )
    rates = stage_rates(q)
    assert rates == {"det": 400.0, "car": 1200.0}
    budgets, total = split_slo(q, need)
    even = even_split(q)
    even_total = sum(need(s, rates[s.id], even[s.id]) for s in q.stages)
    assert total <= even_total + 1e-9
    assert budgets["det"] + budgets["car"] <= q.slo_ms + 1e-9


def test_queries_become_sessions_in_the_plan():
    wl = Workload(
        queries=[
            Query(
                id="q",
                slo_ms=200.0,
                rate=50.0,
                stages=[Stage(id="a", model="m0"), Stage(id="b", model="m2", after="a", fanout=2)],
            )
        ]
    )
    classes = pool("gpu-a", 8e10)
    ss = workload_sessions(wl, PS.curves(), classes)
    assert {s.id for s in ss} == {"q/a", "q/b"}
    assert {s.id: s.rate for s in ss} == {"q/a": 50.0, "q/b": 100.0}
    assert sum(s.slo_ms for s in ss) <= 200.0 + 1e-9
    result = schedule_workload(wl, PS.curves(), classes)
    assert validate_plan(result.plan, ss, PS.curves()) == []
    assert {a.session for g in result.plan.gpus for a in g.allocations} == {"q/a", "q/b"}
