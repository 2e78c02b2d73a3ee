"""The MILP reference (control.exact) against the heuristics on tiny cases: its
restricted optimum is a valid plan never worse than `tnx` (whose cycles it may use),
and its relaxed optimum is a lower bound that no policy's plan beats."""

from __future__ import annotations

import math

import pytest

from bench.workloads import synthetic_profiles, zipf_sessions
from control import exact
from control.problem import GpuClass, TableCache, resolve
from control.scheduler import schedule
from control.validate import validate_plan


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_exact_brackets_the_heuristics(seed):
    ps = synthetic_profiles(seed, 3)
    curves = ps.curves()
    models = sorted({p.model for p in ps.profiles})
    memory = [math.inf, 4e9][seed % 2]
    sessions = zipf_sessions(models, 5, seed, rate=(5, 800))
    classes = [GpuClass("gpu-a", memory)]
    ours = schedule(sessions, curves, classes, "tnx")
    paper = schedule(sessions, curves, classes, "nexus-paper")
    demands = resolve(sessions, TableCache(curves), classes).demands
    duties = [g.duty_cycle_ms for g in ours.plan.gpus]
    best = exact.restricted(demands, ours.gpus, duties, time_limit=30)
    low = exact.relaxed(demands, ours.gpus, time_limit=30)
    assert best.optimal and low.optimal
    assert best.plan is not None
    assert validate_plan(best.plan, sessions, curves, default_memory=memory) == []
    assert best.gpus == len(best.plan.gpus)
    assert low.bound <= best.gpus <= ours.gpus <= paper.gpus
    assert ours.lower_bound <= ours.gpus


def test_exact_finds_the_obvious_optimum():
    """Two light sessions of one model share one GPU; the bound says 1 too."""
    ps = synthetic_profiles(3, 1)
    curves = ps.curves()
    sessions = zipf_sessions(["m0"], 2, 0, slo_ms=(100, 100), rate=(10, 10))
    classes = [GpuClass("gpu-a")]
    demands = resolve(sessions, TableCache(curves), classes).demands
    assert exact.restricted(demands, 2, exact.grid(demands, 6)).gpus == 1
    assert exact.relaxed(demands, 2).bound == 1
