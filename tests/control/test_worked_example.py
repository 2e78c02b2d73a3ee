"""The paper's worked example (a copy of shared/data/nexus-example.json, kept here so that a
clone tests it): Nexus §6.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.problem import pool
from control.scheduler import schedule
from control.types import Workload
from control.validate import lower_bound, validate_plan
from model_repo_tools.profiles import ProfileSet

EXAMPLE = Path(__file__).resolve().parent / "data" / "nexus-example.json"


@pytest.fixture(scope="module")
def example() -> tuple[ProfileSet, Workload]:
    data = json.loads(EXAMPLE.read_text())
    return ProfileSet.model_validate(data), Workload.model_validate(data["workload"])


def test_nexus_paper_gives_the_papers_answer(example):
    ps, wl = example
    s = schedule(wl.sessions, ps.curves(), pool("example-gpu"), "nexus-paper")
    assert s.gpus == 2
    shared, alone = sorted(s.plan.gpus, key=lambda g: -len(g.allocations))
    assert shared.duty_cycle_ms == pytest.approx(125.0)
    assert {a.session: a.batch for a in shared.allocations} == {"A": 8, "B": 4}
    assert [a.session for a in alone.allocations] == ["C"]
    assert validate_plan(s.plan, wl.sessions, ps.curves()) == []


@pytest.mark.parametrize("policy", ["tnx", "batch-oblivious"])
def test_other_policies_are_valid_on_the_example(example, policy):
    ps, wl = example
    s = schedule(wl.sessions, ps.curves(), pool("example-gpu"), policy)
    assert validate_plan(s.plan, wl.sessions, ps.curves()) == []
    assert s.gpus >= lower_bound(wl.sessions, ps.curves())
    if policy == "tnx":
        assert s.gpus == 2


def test_saturated_throughputs_match_the_example(example):
    ps, wl = example
    curves = ps.curves()
    # "saturated, A alone at batch 16 serves 160 req/s and B or C 128 req/s"
    assert curves[("A", "example-gpu")].throughput(16) == pytest.approx(160.0)
    assert curves[("B", "example-gpu")].throughput(16) == pytest.approx(128.0)
    assert curves[("C", "example-gpu")].throughput(16) == pytest.approx(128.0)
