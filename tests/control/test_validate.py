"""The validator of DESIGN.md's invariants and its lower bound."""

from __future__ import annotations

import math

import pytest

from control.tables import BatchTable
from control.types import Allocation, GpuPlan, Plan, Session, Unplaced
from control.validate import lower_bound, validate_plan
from model_repo_tools.profiles import BatchPoint, Profile, ProfileSet

PROFILES = ProfileSet(
    profiles=[
        Profile(
            model="m",
            gpu_type="g",
            batches=[
                BatchPoint(batch=1, latency_ms=10.0, memory_bytes=100),
                BatchPoint(batch=8, latency_ms=24.0, memory_bytes=800),
            ],
        )
    ]
)
CURVES = PROFILES.curves()


def one_gpu(duty: float, batch: int, rate: float, slo: float = 100.0) -> tuple[Plan, list[Session]]:
    s = Session(id="s", model="m", slo_ms=slo, rate=rate)
    a = Allocation(session="s", model="m", batch=batch, rate=rate, slo_ms=slo)
    return Plan(gpus=[GpuPlan(gpu="g0", gpu_type="g", duty_cycle_ms=duty, allocations=[a])]), [s]


def test_valid_plan_has_no_violations():
    plan, ss = one_gpu(duty=40.0, batch=4, rate=100.0)
    assert validate_plan(plan, ss, CURVES) == []


@pytest.mark.parametrize(
    ("duty", "batch", "rate", "slo", "memory", "needle"),
    [
        (15.0, 4, 100.0, 100.0, math.inf, "batches take"),  # l(4) = 16 > 15
        (40.0, 3, 100.0, 100.0, math.inf, "per cycle"),  # 4 arrivals > batch 3
        (40.0, 4, 100.0, 50.0, math.inf, "SLO"),  # 40 + 16 > 50
        (40.0, 4, 100.0, 100.0, 300.0, "memory"),  # memory(4) = 400
        (40.0, 9, 100.0, 100.0, math.inf, "profiled"),
    ],
)
def test_each_invariant_is_checked(duty, batch, rate, slo, memory, needle):
    plan, ss = one_gpu(duty, batch, rate, slo)
    out = validate_plan(plan, ss, CURVES, default_memory=memory)
    assert any(needle in v for v in out), out


def test_rates_must_add_up_or_be_listed_unplaced():
    plan, ss = one_gpu(duty=40.0, batch=4, rate=100.0)
    more = [ss[0].model_copy(update={"rate": 150.0})]
    assert any("requested" in v for v in validate_plan(plan, more, CURVES))
    plan.unplaced.append(Unplaced(session="s", rate=50.0, reason="test"))
    assert validate_plan(plan, more, CURVES) == []


def test_tolerance_is_relative_and_small():
    plan, ss = one_gpu(duty=16.0 * (1 + 1e-8), batch=4, rate=250.0 / (1 + 1e-8))
    assert validate_plan(plan, ss, CURVES) == []
    plan, ss = one_gpu(duty=16.0 * (1 - 1e-4), batch=4, rate=100.0)
    assert validate_plan(plan, ss, CURVES) != []


def test_lower_bound_matches_design_formula():
    # rate 100, SLO 100: b=4 → l=16, d_max = min(40, 84) = 40 → 0.4; b=8 → 24/min(80,76) ≈ 0.316;
    # b=7 → l=22, d_max = min(70, 78) = 70 → 0.314 is the least.
    s = Session(id="s", model="m", slo_ms=100.0, rate=100.0)
    t = BatchTable.from_curve(CURVES[("m", "g")])
    assert t.need(100.0, 100.0) == pytest.approx(22.0 / 70.0)
    assert lower_bound([s] * 3, CURVES) == 1
    assert lower_bound([s] * 4, CURVES) == 2
    # Unservable sessions (SLO below 2·l(1), unknown model) add nothing.
    assert lower_bound([Session(id="x", model="m", slo_ms=15, rate=1)], CURVES) == 0
    assert lower_bound([Session(id="y", model="zz", slo_ms=500, rate=1)], CURVES) == 0
