"""Prefix groups in the planner (control.prefix_plan): one load per group, per-session
allocations in the plan, valid under the group's latency, fewer GPUs than unshared."""

from __future__ import annotations

from control.problem import pool
from control.scheduler import schedule
from control.types import Session
from control.validate import validate_plan
from model_repo_tools.profiles import LatencyCurve

GPU = "h200"
PREFIX = "prefix_0123456789ab"
BATCHES = (1, 2, 4, 8, 16, 32, 64)


def _curve(model: str, fixed: float, per: float) -> LatencyCurve:
    return LatencyCurve(
        model=model,
        gpu_type=GPU,
        batches=BATCHES,
        latencies_ms=tuple(fixed + per * b for b in BATCHES),
        memories=tuple(10_000_000 + 1000 * b for b in BATCHES),
    )


def _curves(heads: int, shared: bool = True) -> dict:
    curves = {}
    for i in range(heads):
        m = f"head{i}"
        # The whole model (its ensemble): backbone + head, a little overhead on top.
        curves[(m, GPU)] = _curve(m, 2.6, 0.55)
        if shared:
            curves[(f"{PREFIX}__{m}", GPU)] = _curve(f"{PREFIX}__{m}", 0.3, 0.05)
    if shared:
        curves[(PREFIX, GPU)] = _curve(PREFIX, 2.0, 0.5)
    curves[("other", GPU)] = _curve("other", 1.0, 0.2)
    return curves


def _sessions(heads: int) -> list[Session]:
    out = [Session(id=f"s{i}", model=f"head{i}", slo_ms=50, rate=150) for i in range(heads)]
    return out + [Session(id="o", model="other", slo_ms=50, rate=300)]


def test_heads_on_one_backbone_take_fewer_gpus_and_the_plan_is_valid() -> None:
    sessions = _sessions(20)
    classes = pool(GPU)
    shared = schedule(sessions, _curves(20), classes, "tnx")
    alone = schedule(sessions, _curves(20, shared=False), classes, "tnx")
    assert validate_plan(shared.plan, sessions, _curves(20)) == []
    assert validate_plan(alone.plan, sessions, _curves(20, shared=False)) == []
    assert shared.gpus < alone.gpus
    # Every session is placed by its own allocations, under its own model and SLO.
    placed: dict[str, float] = {}
    for g in shared.plan.gpus:
        for a in g.allocations:
            assert a.model == f"head{a.session[1:]}" or a.session == "o"
            placed[a.session] = placed.get(a.session, 0.0) + a.rate
    assert placed == {s.id: s.rate for s in sessions} or all(
        abs(placed[s.id] - s.rate) < 1e-6 for s in sessions
    )


def test_the_validator_counts_the_group_once_per_cycle() -> None:
    sessions = _sessions(20)
    shared = schedule(sessions, _curves(20), pool(GPU), "tnx").plan
    # The same plan judged as if every head ran whole breaks the cycle somewhere.
    unshared = _curves(20, shared=False)
    assert any("duty cycle" in p for p in validate_plan(shared, sessions, unshared))


def test_a_lone_member_is_planned_whole() -> None:
    sessions = [Session(id="s0", model="head0", slo_ms=50, rate=150)]
    plan = schedule(sessions, _curves(1), pool(GPU), "tnx").plan
    assert [a.model for g in plan.gpus for a in g.allocations] == ["head0"]
    assert validate_plan(plan, sessions, _curves(1)) == []


def test_many_heads_per_backbone_are_chunked_and_stay_valid() -> None:
    # Five H200 backbones with 50 heads each (bench.prefix_workload): groups that big are
    # cut into chunks one GPU can carry, and no GPU runs a prefix batch past its profile.
    from bench.prefix_workload import heads_on_backbones
    from control.cli import DEFAULT_PROFILES
    from model_repo_tools.profiles import ProfileSet

    split, whole, sessions = heads_on_backbones(ProfileSet.load(DEFAULT_PROFILES), GPU, 50, 0)
    classes = pool(GPU, 141e9)
    shared = schedule(sessions, split, classes, "tnx")
    alone = schedule(sessions, whole, classes, "tnx")
    assert validate_plan(shared.plan, sessions, split, default_memory=141e9) == []
    assert shared.gpus < alone.gpus


def test_an_incremental_re_plan_stays_valid() -> None:
    # Re-plans keep members where they were, priced whole (control.incremental does not
    # see groups): the shared rule (control.prefix_rule) keeps such a plan valid.
    from bench.workloads import rescale

    sessions = _sessions(20)
    first = schedule(sessions, _curves(20), pool(GPU), "tnx").plan
    moved = rescale(sessions, 1)
    again = schedule(moved, _curves(20), pool(GPU), "tnx", previous=first)
    assert validate_plan(again.plan, moved, _curves(20)) == []
