"""GPU types, memory and fixed fleets: where sessions go and what is left unplaced."""

from __future__ import annotations

import math

from control.problem import GpuClass, fleet_classes, pool
from control.scheduler import schedule
from control.types import Session
from control.validate import validate_plan
from model_repo_tools.fleet import Fleet, FleetGpu
from model_repo_tools.profiles import BatchPoint, Profile, ProfileSet


def profile(model: str, gpu_type: str, scale: float, weights: int = 10**9) -> Profile:
    pts = [(1, 2.0), (8, 4.0), (32, 10.0), (64, 18.0)]
    return Profile(
        model=model,
        gpu_type=gpu_type,
        weights_bytes=weights,
        batches=[
            BatchPoint(batch=b, latency_ms=lat * scale, memory_bytes=weights + b * 10**7)
            for b, lat in pts
        ],
    )


PS = ProfileSet(
    profiles=[
        profile("fast-on-a", "a", 1.0),
        profile("fast-on-a", "b", 3.0),
        profile("fast-on-b", "a", 3.0),
        profile("fast-on-b", "b", 1.0),
        profile("only-a", "a", 1.0),
    ]
)
CURVES = PS.curves()


def sessions(n: int, rate: float = 300.0) -> list[Session]:
    models = ["fast-on-a", "fast-on-b", "only-a"]
    return [
        Session(id=f"s{i}", model=models[i % 3], slo_ms=60 + 7 * i, rate=rate + 13 * i)
        for i in range(n)
    ]


def test_each_session_goes_to_the_type_where_it_costs_least():
    ss = sessions(9)
    s = schedule(ss, CURVES, [GpuClass("a", 8e10), GpuClass("b", 8e10)])
    assert validate_plan(s.plan, ss, CURVES, default_memory=8e10) == []
    where = {a.session: g.gpu_type for g in s.plan.gpus for a in g.allocations}
    for x in ss:
        expected = "b" if x.model == "fast-on-b" else "a"
        assert where[x.id] == expected


def test_memory_is_respected_and_too_big_models_are_unplaced():
    ss = sessions(12)
    small = pool("a", 2.5e9)  # two models' weights at most
    s = schedule(ss, CURVES, small)
    assert validate_plan(s.plan, ss, CURVES, default_memory=2.5e9) == []
    assert all(len(g.allocations) <= 2 for g in s.plan.gpus)
    tiny = pool("a", 5e8)  # no model's weights fit
    s = schedule(ss, CURVES, tiny)
    assert not s.plan.gpus
    assert all("bytes at batch 1" in u.reason for u in s.plan.unplaced)
    assert math.isclose(sum(u.rate for u in s.plan.unplaced), sum(x.rate for x in ss))


def fleet(counts: dict[str, int], memory: int = 80 * 10**9) -> Fleet:
    return Fleet(
        gpus=[
            FleetGpu(id=f"{t}/{i}", gpu_type=t, memory_bytes=memory, server=f"{t}:{8001 + i}")
            for t, n in counts.items()
            for i in range(n)
        ]
    )


def test_fleet_overflow_moves_to_other_types_then_is_unplaced():
    ss = sessions(30, rate=2000.0)
    big = schedule(ss, CURVES, [GpuClass("a", 8e10), GpuClass("b", 8e10)])
    need_a = sum(1 for g in big.plan.gpus if g.gpu_type == "a")
    assert need_a > 2
    fl = fleet({"a": 2, "b": 50})
    classes = fleet_classes(fl)
    s = schedule(ss, CURVES, classes)
    memory = {g.id: float(g.memory_bytes) for g in fl.gpus}
    assert validate_plan(s.plan, ss, CURVES, memory) == []
    ids = [g.gpu for g in s.plan.gpus]
    assert len(ids) == len(set(ids)) and set(ids) <= set(memory)
    assert sum(1 for g in s.plan.gpus if g.gpu_type == "a") <= 2
    # fast-on-a overflowed onto b; only-a has nowhere else to go.
    assert any(
        a.model == "fast-on-a" for g in s.plan.gpus if g.gpu_type == "b" for a in g.allocations
    )
    assert s.plan.unplaced and all(
        u.session in {x.id for x in ss if x.model == "only-a"} for u in s.plan.unplaced
    )
    assert all("fleet full" in u.reason for u in s.plan.unplaced)


def test_incremental_on_a_fleet_keeps_gpu_ids():
    ss = sessions(12)
    classes = fleet_classes(fleet({"a": 6, "b": 6}))
    first = schedule(ss, CURVES, classes)
    moved = [x.model_copy(update={"rate": x.rate * 1.2}) for x in ss]
    again = schedule(moved, CURVES, classes, previous=first.plan)
    assert validate_plan(again.plan, moved, CURVES, default_memory=8e10) == []
    before = {(g.gpu, a.session) for g in first.plan.gpus for a in g.allocations}
    after = {(g.gpu, a.session) for g in again.plan.gpus for a in g.allocations}
    assert len(before & after) >= 0.7 * len(before)
    assert again.moves.count == len(after - before) + len(before - after)
