"""Issue 15's guarantees of incremental re-planning: GPU ids stay, the move budget holds,
every session is placed or listed unplaced, plans stay valid, and what the budget held
back is reported."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.workloads import rescale, synthetic_profiles, zipf_sessions
from control.cli import DEFAULT_PROFILES
from control.problem import GpuClass, pool
from control.scheduler import schedule
from control.validate import validate_plan
from model_repo_tools.profiles import ProfileSet
from tests.control.test_properties import cases, check

PS = ProfileSet.load(DEFAULT_PROFILES)
CURVES = PS.curves()
MODELS = sorted({p.model for p in PS.profiles})
POOL = pool("h200", 141e9)


def pairs(plan) -> set[tuple[str, str]]:
    return {(g.gpu, a.session) for g in plan.gpus for a in g.allocations}


@settings(max_examples=60, deadline=None)
@given(cases(), st.floats(0.0, 0.9), st.sampled_from([0, 2, 10, None]))
def test_budget_ids_and_validity(case, change, budget):
    ps, sessions, classes, seed = case
    first = schedule(sessions, ps.curves(), classes, "tnx")
    moved = rescale(sessions, seed + 1, change)
    again = schedule(moved, ps.curves(), classes, "tnx", previous=first.plan, max_moves=budget)
    check(again.plan, moved, ps, classes)  # valid; every session placed or listed unplaced
    if budget is not None:
        assert again.move_budget == budget
    # The budget bounds the moves beyond those the new rates need.
    assert again.moves.count <= again.required_moves + again.move_budget
    before = {g.gpu: {a.session for a in g.allocations} for g in first.plan.gpus}
    pooled = all(c.ids is None for c in classes)
    for g in again.plan.gpus:
        if g.gpu in before and pooled:
            # A pool GPU's id names its models: it keeps sessions it had (unless all are
            # gone); new pool GPUs get new ids. (A fleet's ids are its GPUs: one freed may
            # be given other sessions.)
            had = before[g.gpu] & {s.id for s in moved if s.rate > 0}
            assert not had or had & {a.session for a in g.allocations}, g.gpu


def test_no_budget_means_only_the_moves_the_rates_need():
    ss = zipf_sessions(MODELS, 300, seed=8)
    first = schedule(ss, CURVES, POOL)
    down = [s.model_copy(update={"rate": s.rate * 0.6}) for s in ss]
    frozen = schedule(down, CURVES, POOL, previous=first.plan, max_moves=0)
    assert frozen.moves.count == frozen.required_moves == 0
    assert frozen.gpus == first.gpus  # shrinking rates frees room but moves nothing
    assert frozen.held_back is not None and frozen.held_back.gpus > 0
    # Rates fell by 40%: a fresh plan would need far fewer GPUs, and the report says so.
    assert frozen.held_back.behind is not None and frozen.held_back.behind > 0.2 * first.gpus
    free = schedule(down, CURVES, POOL, previous=first.plan, max_moves=10**6)
    assert free.gpus < frozen.gpus
    assert free.moves.count <= free.required_moves + 10**6
    some = schedule(down, CURVES, POOL, previous=first.plan, max_moves=20)
    assert some.moves.count <= 20 and free.gpus <= some.gpus <= frozen.gpus
    for s in (frozen, free, some):
        assert validate_plan(s.plan, down, CURVES, default_memory=141e9) == []


def test_rate_changes_keep_most_allocations_and_gpu_ids():
    ss = zipf_sessions(MODELS, 600, seed=9)
    first = schedule(ss, CURVES, POOL)
    moved = rescale(ss, seed=10, change=0.3)
    again = schedule(moved, CURVES, POOL, previous=first.plan)
    assert validate_plan(again.plan, moved, CURVES, default_memory=141e9) == []
    allocs = len(pairs(first.plan))
    assert again.moves.count <= 0.15 * allocs, (again.moves.count, allocs)
    kept = {g.gpu for g in first.plan.gpus} & {g.gpu for g in again.plan.gpus}
    assert len(kept) >= 0.9 * first.gpus


def test_a_fleet_gpu_freed_may_take_new_sessions():
    """Fleet ids are real GPUs: a freed one is reused (pool ids are not)."""
    ps = synthetic_profiles(5, 3)
    models = sorted({p.model for p in ps.profiles})
    ss = zipf_sessions(models, 30, 5, rate=(5, 500))
    classes = [GpuClass("gpu-a", math.inf, tuple(f"g{i}" for i in range(40)))]
    first = schedule(ss, ps.curves(), classes)
    moved = rescale(ss, 6, 0.5)
    again = schedule(moved, ps.curves(), classes, previous=first.plan, max_moves=0)
    assert {g.gpu for g in again.plan.gpus} <= set(classes[0].ids)
    assert validate_plan(again.plan, moved, ps.curves()) == []


def test_a_wasteful_plan_moves_towards_a_fresh_one_within_the_budget():
    """From one GPU per session (batch-oblivious), re-planning with a budget frees GPUs a
    step at a time; without one it moves only what the new rates need."""
    ss = zipf_sessions(MODELS, 120, seed=12, rate=(5, 300))
    wasteful = schedule(ss, CURVES, POOL, "batch-oblivious")
    fresh = schedule(ss, CURVES, POOL)
    nudged = [s.model_copy(update={"rate": s.rate * 1.01}) for s in ss]
    stay = schedule(nudged, CURVES, POOL, previous=wasteful.plan, max_moves=0)
    assert stay.moves.count == stay.required_moves
    step = schedule(nudged, CURVES, POOL, previous=wasteful.plan, max_moves=60)
    assert step.moves.count <= step.required_moves + 60
    assert fresh.gpus < step.gpus < stay.gpus
    assert step.held_back is not None and step.held_back.gpus > 0  # the rest, for later
    free = schedule(nudged, CURVES, POOL, previous=wasteful.plan, max_moves=10**6)
    assert free.gpus <= step.gpus
    for s in (stay, step, free):
        assert validate_plan(s.plan, nudged, CURVES, default_memory=141e9) == []
