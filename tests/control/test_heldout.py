"""Held-out comparison with the paper's algorithm: profiles, models and seeds that
appear nowhere else in the repository, including GPUs with little memory.

The default policy must be valid, never use more GPUs than `nexus-paper` on any case,
and use at least 10% fewer in total. The first two sets were seen while the policy was
tuned and stay as regression cases; the last (FRESH_SEEDS) was added after tuning
stopped and has never been tuned against: keep it that way, add new seeds instead.
"""

from __future__ import annotations

import math

import pytest

from bench.workloads import synthetic_profiles, zipf_sessions
from control.problem import GpuClass
from control.scheduler import schedule
from control.validate import validate_plan

SEEDS = (11, 12, 13, 14)
MEMORY = (math.inf, 1.6e10, 4e9)


def cases():
    for seed in SEEDS:
        types = ("ga", "gb") if seed % 2 else ("ga",)
        ps = synthetic_profiles(seed, 6, types)
        models = sorted({p.model for p in ps.profiles})
        for memory in MEMORY:
            for n in (60, 400):
                sessions = zipf_sessions(models, n, seed + 100, slo_ms=(10, 200), rate=(5, 2000))
                yield ps, sessions, [GpuClass(t, memory) for t in types]


@pytest.fixture(scope="module")
def results():
    out = []
    for ps, sessions, classes in cases():
        row = {}
        for policy in ("tnx", "nexus-paper"):
            s = schedule(sessions, ps.curves(), classes, policy)
            mem = min(c.memory for c in classes)
            assert validate_plan(s.plan, sessions, ps.curves(), default_memory=mem) == []
            row[policy] = s.gpus
            row[policy + " unplaced"] = sorted(u.session for u in s.plan.unplaced)
        assert row["tnx unplaced"] == row["nexus-paper unplaced"]
        out.append(row)
    return out


def test_never_more_gpus_than_the_paper(results):
    assert all(r["tnx"] <= r["nexus-paper"] for r in results), results


def test_at_least_ten_percent_fewer_in_total(results):
    ours = sum(r["tnx"] for r in results)
    paper = sum(r["nexus-paper"] for r in results)
    assert ours <= 0.9 * paper, (ours, paper)


# A second held-out set: other seeds, 5 to 8 models, SLO ranges from tight to loose,
# GPUs from 2.5 GB (memory binds) to unbounded, 30 to 150 sessions, one or two types.
VARIETY_SEEDS = (21, 22, 23, 24)
VARIETY = (
    (math.inf, (10, 60), 150),
    (8e9, (50, 200), 150),
    (2.5e9, (10, 200), 100),
    (6e9, (20, 100), 30),
)


@pytest.fixture(scope="module")
def variety():
    out = []
    for seed in VARIETY_SEEDS:
        types = ("ga", "gb") if seed % 3 == 0 else ("ga",)
        ps = synthetic_profiles(seed, 5 + seed % 4, types)
        models = sorted({p.model for p in ps.profiles})
        for memory, slo, n in VARIETY:
            sessions = zipf_sessions(models, n, seed * 7, slo_ms=slo, rate=(2, 3000))
            classes = [GpuClass(t, memory) for t in types]
            row = {}
            for policy in ("tnx", "nexus-paper"):
                s = schedule(sessions, ps.curves(), classes, policy)
                errs = validate_plan(s.plan, sessions, ps.curves(), default_memory=memory)
                assert errs == [], (seed, memory, policy, errs[:3])
                row[policy] = s.gpus
            out.append(row)
    return out


def test_variety_never_more_and_ten_percent_fewer(variety):
    assert all(r["tnx"] <= r["nexus-paper"] for r in variety), variety
    ours = sum(r["tnx"] for r in variety)
    paper = sum(r["nexus-paper"] for r in variety)
    assert ours <= 0.9 * paper, (ours, paper)


# Never tuned against: seeds, skew (1.1), SLO and rate ranges and memory sizes that
# appear nowhere else; 4 to 8 models, one or two GPU types.
FRESH_SEEDS = (41, 43, 47, 53)
FRESH = (
    (math.inf, (10, 200), 200),
    (1.2e10, (20, 150), 200),
    (3e9, (15, 80), 120),
)


@pytest.fixture(scope="module")
def fresh():
    out = []
    for seed in FRESH_SEEDS:
        types = ("ga", "gb") if seed % 4 == 1 else ("ga",)
        ps = synthetic_profiles(seed, 4 + seed % 5, types)
        models = sorted({p.model for p in ps.profiles})
        for memory, slo, n in FRESH:
            sessions = zipf_sessions(models, n, seed * 13, skew=1.1, slo_ms=slo, rate=(3, 2500))
            classes = [GpuClass(t, memory) for t in types]
            row = {"case": (seed, memory, slo, n)}
            for policy in ("tnx", "nexus-paper"):
                s = schedule(sessions, ps.curves(), classes, policy)
                errs = validate_plan(s.plan, sessions, ps.curves(), default_memory=memory)
                assert errs == [], (seed, memory, policy, errs[:3])
                row[policy] = s.gpus
                if policy == "tnx":
                    again = schedule(sessions, ps.curves(), classes, "tnx", previous=s.plan)
                    row["moves with the same rates"] = again.moves.count
            out.append(row)
    return out


def test_fresh_cases_never_more_and_ten_percent_fewer(fresh):
    assert all(r["tnx"] <= r["nexus-paper"] for r in fresh), fresh
    ours = sum(r["tnx"] for r in fresh)
    paper = sum(r["nexus-paper"] for r in fresh)
    assert ours <= 0.9 * paper, (ours, paper)


def test_fresh_cases_replan_with_the_same_rates_without_moves(fresh):
    assert all(r["moves with the same rates"] == 0 for r in fresh), fresh


def test_real_h200_profiles_at_2000_sessions_beat_the_paper():
    from control.cli import DEFAULT_PROFILES
    from control.problem import pool
    from model_repo_tools.profiles import ProfileSet

    ps = ProfileSet.load(DEFAULT_PROFILES)
    sessions = zipf_sessions(sorted({p.model for p in ps.profiles}), 2000, seed=7)
    ours = schedule(sessions, ps.curves(), pool("h200", 141e9), "tnx")
    paper = schedule(sessions, ps.curves(), pool("h200", 141e9), "nexus-paper")
    assert ours.gpus <= 0.9 * paper.gpus
    assert ours.gpus >= ours.lower_bound
