"""Held-out comparison with the paper's algorithm: profiles, models and seeds that
appear nowhere else in the repository, including GPUs with little memory.

The default policy must be valid, never use more GPUs than `nexus-paper` on any case,
and use at least 10% fewer in total.
"""

from __future__ import annotations

import math

import pytest

from control.problem import GpuClass
from control.scheduler import schedule
from control.validate import validate_plan
from control.workloads import synthetic_profiles, zipf_sessions

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
