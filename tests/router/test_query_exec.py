"""The pure pieces of query execution: the stage planner on a manual clock (`QueryRun`), the
wiring of a stage's inputs from its parent's outputs with fan-out, and the plan's query table."""

from __future__ import annotations

import numpy as np
import pytest

from control.types import Plan
from router.http_errors import HttpError
from router.model_schema import TensorSpec
from router.queries import QueryTable
from router.query_exec import Fail, Finish, QueryRun, QuerySpec, RunStage, StageSpec
from router.query_wiring import WiringError, stack, stage_items
from router.testing import curves


def _spec(slo: float = 100.0) -> QuerySpec:
    """det (5 ms at least) → {cls (10 ms), emb (3 ms) → post (4 ms)}."""
    return QuerySpec(
        "q",
        slo,
        (
            StageSpec("det", "a", "q/det", 40.0, None, 5.0),
            StageSpec("cls", "b", "q/cls", 60.0, "det", 10.0),
            StageSpec("emb", "c", "q/emb", 30.0, "det", 3.0),
            StageSpec("post", "d", "q/post", 30.0, "emb", 4.0),
        ),
    )


def test_stages_run_after_their_parent_with_the_deadline_less_what_follows() -> None:
    spec = _spec()
    assert spec.tail("det") == 10.0 and spec.tail("emb") == 4.0 and spec.tail("cls") == 0.0
    assert spec.least_ms == 15.0
    run = QueryRun(spec, arrival=1000.0, reserve_ms=2.0)
    assert run.deadline == 1098.0
    assert run.start(1000.0) == [RunStage("det", 1088.0)]
    assert run.start(1000.0) == []  # once
    assert run.stage_done(1020.0, "cls") == []  # not running: ignored
    assert run.stage_done(1030.0, "det") == [RunStage("cls", 1098.0), RunStage("emb", 1094.0)]
    assert run.stage_done(1040.0, "emb") == [RunStage("post", 1098.0)]
    assert run.stage_done(1050.0, "cls") == []
    assert run.stage_done(1060.0, "post") == [Finish()]
    assert run.over and run.stage_failed(1061.0, "post", "deadline") == []
    assert run.planned_end("post") == 1000.0 + 40 + 30 + 30


def test_a_query_fails_as_soon_as_what_is_left_cannot_be_met() -> None:
    # The SLO is below the least latency: refused at the start.
    [fail] = QueryRun(_spec(slo=12.0), arrival=0.0).start(0.0)
    assert isinstance(fail, Fail) and fail.reason == "deadline" and fail.stage == "det"
    assert "at least 15.0 ms" in fail.detail
    # The root ends late: the children cannot make it, none is started.
    run = QueryRun(_spec(), arrival=0.0)
    run.start(0.0)
    [fail] = run.stage_done(91.0, "det")  # cls needs 10 ms, 9 are left (emb + post: 7)
    assert fail == Fail("deadline", fail.detail, "cls") and run.over
    assert run.stage_done(92.0, "emb") == []
    # A stage request dropped: the query fails with its reason, once.
    run = QueryRun(_spec(), arrival=0.0)
    run.start(0.0)
    run.stage_done(10.0, "det")
    assert run.stage_failed(20.0, "emb", "deadline", "x") == [Fail("deadline", "x", "emb")]
    assert run.stage_failed(21.0, "cls", "expired") == []
    assert run.stage_done(22.0, "cls") == []


def test_a_spec_is_a_tree_with_one_root() -> None:
    with pytest.raises(ValueError, match="2 stages without 'after'"):
        QuerySpec("q", 10.0, (StageSpec("a", "m", "q/a", 5.0), StageSpec("b", "m", "q/b", 5.0)))
    with pytest.raises(ValueError, match="after unknown"):
        QuerySpec(
            "q", 10.0, (StageSpec("a", "m", "q/a", 5.0), StageSpec("b", "m", "q/b", 5.0, "z"))
        )


F32 = "FP32"


def test_inputs_come_from_outputs_by_name_else_position_with_fan_out() -> None:
    parts = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # 2 samples, 3 items each
    score = np.ones((2, 3), dtype=np.float32)
    outputs = {"parts": parts, "score": score}
    # By position: the child's only input takes the parent's first output.
    laid = stage_items(outputs, ["parts", "score"], [TensorSpec("x", F32, (4,), True)], "s")
    assert laid.lead == (2, 3) and len(laid.items) == 6
    assert np.array_equal(laid.items[4]["x"], parts[1, 1:2])
    # By name, whatever the position; [n, 3] into an input of [3]: one item per sample.
    laid = stage_items(outputs, ["parts", "score"], [TensorSpec("score", F32, (3,), True)], "s")
    assert laid.lead == (2,) and laid.items[0]["score"].shape == (1, 3)
    # Results stacked back to the items' layout.
    results = [{"y": np.full((1, 5), j, dtype=np.float32)} for j in range(6)]
    out = stack((2, 3), results, [TensorSpec("y", F32, (5,), True)])
    assert out["y"].shape == (2, 3, 5) and out["y"][1, 2, 0] == 5.0
    # No items: empty outputs of the right type.
    empty = stage_items(
        {"p": np.zeros((1, 0, 4), np.float32)}, ["p"], [TensorSpec("x", F32, (4,), True)], "s"
    )
    assert empty.lead == (1, 0) and empty.items == []
    none = stack(empty.lead, [], [TensorSpec("y", F32, (-1, 5), True)])
    assert none["y"].shape == (1, 0, 0, 5) and none["y"].dtype == np.float32


def test_wiring_errors_name_the_stage_and_tensors() -> None:
    outputs = {"parts": np.zeros((1, 3, 4), np.float32)}
    with pytest.raises(WiringError, match="stage s: parent output 'parts' of shape"):
        stage_items(outputs, ["parts"], [TensorSpec("x", F32, (5,), True)], "stage s")
    with pytest.raises(WiringError, match="is FP32, input 'x' takes INT64"):
        stage_items(outputs, ["parts"], [TensorSpec("x", "INT64", (4,), True)], "s")
    with pytest.raises(WiringError, match="no parent output of its name or at its position 1"):
        stage_items(
            outputs,
            ["parts"],
            [TensorSpec("x", F32, (4,), True), TensorSpec("z", F32, (4,), True)],
            "s",
        )


def _plan(placed: bool = True) -> Plan:
    allocs = [{"session": "q/a", "model": "m", "batch": 4, "rate": 1.0, "slo_ms": 30.0}]
    if placed:
        allocs.append({"session": "q/b", "model": "m", "batch": 4, "rate": 1.0, "slo_ms": 70.0})
    return Plan.model_validate(
        {
            "gpus": [{"gpu": "g0", "gpu_type": "t", "duty_cycle_ms": 10.0, "allocations": allocs}],
            "queries": [
                {
                    "id": "q",
                    "slo_ms": 100.0,
                    "stages": [
                        {"id": "a", "model": "m", "session": "q/a", "budget_ms": 30.0},
                        {
                            "id": "b",
                            "model": "m",
                            "session": "q/b",
                            "budget_ms": 70.0,
                            "after": "a",
                        },
                    ],
                }
            ],
        }
    )


def test_the_query_table_follows_the_plan() -> None:
    table = QueryTable(_plan(), curves())
    spec = table.get("q")
    assert [s.min_ms for s in spec.stages] == [5.0, 5.0]  # l(1) of the test curve
    assert spec.root.id == "a" and spec.least_ms == 10.0
    with pytest.raises(HttpError) as err:
        table.get("nope")
    assert err.value.status == 404 and "unknown query 'nope'" in err.value.message
    table.update(_plan(placed=False))
    with pytest.raises(HttpError) as err:
        table.get("q")
    assert err.value.status == 503 and err.value.extra == {"reason": "no_placement"}
    assert "'q/b' is not placed" in err.value.message
    table.update(Plan())
    with pytest.raises(HttpError) as err:
        table.get("q")
    assert err.value.status == 503  # a plan once named it
