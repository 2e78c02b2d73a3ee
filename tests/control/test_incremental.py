"""Incremental re-planning keeps placements and counts moves."""

from __future__ import annotations

from bench.workloads import rescale, zipf_sessions
from control.cli import DEFAULT_PROFILES
from control.incremental import diff
from control.problem import pool
from control.scheduler import schedule
from control.validate import validate_plan
from model_repo_tools.profiles import ProfileSet

PS = ProfileSet.load(DEFAULT_PROFILES)
CURVES = PS.curves()
MODELS = sorted({p.model for p in PS.profiles})
POOL = pool("h200", 141e9)


def test_same_rates_move_nothing():
    ss = zipf_sessions(MODELS, 100, seed=3)
    first = schedule(ss, CURVES, POOL)
    again = schedule(ss, CURVES, POOL, previous=first.plan)
    assert again.moves.count == 0
    assert again.gpus == first.gpus


def test_rate_change_moves_far_less_than_replanning_from_scratch():
    ss = zipf_sessions(MODELS, 300, seed=4)
    first = schedule(ss, CURVES, POOL)
    moved = rescale(ss, seed=5, change=0.3)
    inc = schedule(moved, CURVES, POOL, previous=first.plan)
    scratch = schedule(moved, CURVES, POOL)
    assert validate_plan(inc.plan, moved, CURVES, default_memory=141e9) == []
    assert inc.moves.count < diff(first.plan, scratch.plan).count / 3
    assert inc.gpus <= 1.1 * scratch.gpus + 1


def test_removed_session_is_unloaded_and_new_one_loaded():
    ss = zipf_sessions(MODELS, 30, seed=6)
    first = schedule(ss, CURVES, POOL)
    gone = ss[0]
    new = ss[1].model_copy(update={"id": "newcomer"})
    nxt = [*ss[1:], new]
    inc = schedule(nxt, CURVES, POOL, previous=first.plan)
    assert validate_plan(inc.plan, nxt, CURVES) == []
    assert {m.session for m in inc.moves.unloads} >= {gone.id}
    assert "newcomer" in {m.session for m in inc.moves.loads}
    kept = {
        (g.gpu, a.session) for g in first.plan.gpus for a in g.allocations if a.session != gone.id
    }
    now = {(g.gpu, a.session) for g in inc.plan.gpus for a in g.allocations}
    assert len(kept & now) >= 0.8 * len(kept)
