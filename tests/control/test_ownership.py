"""GPU ownership (control.ownership): every planned GPU to one live router, stable, balanced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from control.ownership import TIMEOUT_S, RouterRegistry, assign
from control.types import Plan


def _plan(rates: dict[str, float]) -> Plan:
    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": g,
                    "gpu_type": "cpu",
                    "duty_cycle_ms": 50.0,
                    "allocations": [
                        {"session": f"s-{g}", "model": "m", "batch": 4, "rate": r, "slo_ms": 200}
                    ],
                }
                for g, r in rates.items()
            ]
        }
    )


def _loads(plan: Plan, owner: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for g in plan.gpus:
        out[owner[g.gpu]] = out.get(owner[g.gpu], 0.0) + sum(a.rate for a in g.allocations)
    return out


def test_no_live_router_owns_nothing() -> None:
    plan = _plan({"g0": 10.0})
    assert assign(plan, {}, 0.0, {}) == {}
    assert assign(plan, {"a": 0.0}, 10.0, {"g0": "a"}) == {}


def test_gpus_balanced_by_planned_rate() -> None:
    plan = _plan({"g0": 100.0, "g1": 60.0, "g2": 40.0})
    owner = assign(plan, {"a": 0.0, "b": 0.0}, 0.0, {})
    assert set(owner) == {"g0", "g1", "g2"}
    assert sorted(_loads(plan, owner).values()) == [100.0, 100.0]


def test_owner_kept_while_it_lives_and_dead_router_loses_its_gpus() -> None:
    plan = _plan({"g0": 50.0, "g1": 50.0})
    clock = 0.0
    beats = {"a": clock, "b": clock}
    first = assign(plan, beats, clock, {})
    assert sorted(first.values()) == ["a", "b"]
    # Rates shift a little: nobody moves.
    shifted = _plan({"g0": 70.0, "g1": 45.0})
    clock += 1.0
    beats = {"a": clock, "b": clock}
    assert assign(shifted, beats, clock, first) == first
    # b stops heart-beating: within TIMEOUT_S it keeps its GPU, after it a takes both.
    clock += TIMEOUT_S
    beats["a"] = clock
    assert assign(plan, beats, clock, first) == first
    clock += 0.5
    beats["a"] = clock
    assert assign(plan, beats, clock, first) == {"g0": "a", "g1": "a"}


def test_late_router_gets_a_share_and_new_gpus_go_to_the_least_loaded() -> None:
    plan = _plan({"g0": 50.0, "g1": 50.0})
    alone = assign(plan, {"a": 0.0}, 0.0, {})
    assert alone == {"g0": "a", "g1": "a"}
    both = assign(plan, {"a": 1.0, "b": 1.0}, 1.0, alone)
    assert sorted(both.values()) == ["a", "b"]
    assert assign(plan, {"a": 1.5, "b": 1.5}, 1.5, both) == both  # stable from there
    grown = _plan({"g0": 50.0, "g1": 50.0, "g2": 10.0})
    third = assign(grown, {"a": 2.0, "b": 2.0}, 2.0, both)
    assert {g: third[g] for g in both} == both
    gone = assign(_plan({"g1": 50.0}), {"a": 2.0, "b": 2.0}, 2.0, both)
    assert gone == {"g1": both["g1"]}


@settings(max_examples=200, deadline=None)
@given(
    rates=st.lists(st.floats(0.0, 500.0), min_size=1, max_size=12),
    routers=st.integers(1, 4),
    dead=st.integers(0, 3),
)
def test_every_gpu_has_one_live_owner_and_loads_are_near_balanced(
    rates: list[float], routers: int, dead: int
) -> None:
    plan = _plan({f"g{i}": r for i, r in enumerate(rates)})
    names = [f"r{i}" for i in range(routers)]
    first = assign(plan, dict.fromkeys(names, 0.0), 0.0, {})
    assert set(first) == {g.gpu for g in plan.gpus} and set(first.values()) <= set(names)
    # Some routers die; the survivors own everything, keeping what they had.
    alive = names[: max(1, routers - dead)]
    beats = {r: (10.0 if r in alive else 0.0) for r in names}
    later = assign(plan, beats, 10.0, first)
    assert set(later) == set(first) and set(later.values()) <= set(alive)
    # Balanced: no single move would cut the larger load by the rebalance margin.
    weights = {g.gpu: 1.0 + g.allocations[0].rate for g in plan.gpus}
    load = dict.fromkeys(alive, 0.0)
    for g, r in later.items():
        load[r] += weights[g]
    hi, lo = max(load.values()), min(load.values())
    assert all(
        max(hi - weights[g], lo + weights[g]) > 0.8 * hi for g, r in later.items() if load[r] == hi
    )


def test_registry_names_owners_only_with_two_live_routers() -> None:
    plan = _plan({"g0": 10.0, "g1": 10.0})
    reg = RouterRegistry(started=-5.0)
    assert reg.settling(-4.0) and not reg.settling(-5.0 + TIMEOUT_S)
    reg.heartbeat("http://a/", 0.0)
    assert reg.assign(plan, 0.5) == {}  # alone: owns all, unnamed
    reg.heartbeat("http://b", 1.0)
    both = reg.assign(plan, 1.0)
    assert sorted(both.values()) == ["http://a", "http://b"]
    reg.heartbeat("http://b", 3.0)
    assert reg.assign(plan, 3.0) == {}  # a missed its heartbeats: b alone again
    assert reg.live(100.0) == [] and reg.heartbeats == {}  # long dead: forgotten
