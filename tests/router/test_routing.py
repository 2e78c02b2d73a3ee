"""router.routing and router.http_errors: which session a request joins, and the answers
when none does or the policy drops it."""

from __future__ import annotations

import json

import pytest

from router.http_errors import HttpError, dropped
from router.routing import SessionTable
from router.testing import plan


def _table() -> SessionTable:
    return SessionTable(
        plan(
            ("g0", 20.0, [("fast", "m", 4, 50.0), ("one", "n", 4, 80.0)]),
            ("g1", 20.0, [("slow", "m", 8, 200.0), ("fast", "m", 4, 40.0)]),
        )
    )


def test_a_model_s_only_session_needs_no_header_and_a_split_one_runs_at_its_tightest_slo():
    table = _table()
    assert table.pick("n", None) == ("one", 80.0)
    assert table.served("m") == {40.0: "fast", 200.0: "slow"}
    assert table.pick("m", "200") == ("slow", 200.0)
    assert table.pick("m", "40.0000001") == ("fast", 40.0)


@pytest.mark.parametrize(
    ("model", "header", "status", "words"),
    [
        ("m", None, 400, "choose one with the X-SLO-Ms header"),
        ("m", "fast", 400, "not a number"),
        ("m", "50", 400, "no session with an SLO of 50 ms (its sessions: 40 ms, 200 ms)"),
        ("x", None, 404, "unknown model 'x'"),
    ],
)
def test_a_request_no_session_fits_is_told_why(model, header, status, words):
    with pytest.raises(HttpError) as err:
        _table().pick(model, header)
    assert err.value.status == status and words in err.value.message


def test_a_model_the_plan_no_longer_places_is_503_not_404():
    table = _table()
    table.update(plan(("g0", 20.0, [("one", "n", 4, 80.0)])))
    with pytest.raises(HttpError) as err:
        table.served("m")
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "1"}
    assert json.loads(err.value.body())["reason"] == "no_placement"


def test_a_drop_is_503_with_retry_after_unless_the_request_was_at_fault():
    late = dropped("m", "deadline")
    assert (late.status, late.headers) == (503, {"Retry-After": "1"})
    assert json.loads(late.body()) == {
        "error": "request to 'm' not served: cannot be served within its SLO",
        "reason": "deadline",
    }
    refused = dropped("m", "rejected", "input 'x': bad shape")
    assert (refused.status, refused.headers) == (400, None)
    assert refused.message.endswith("the server refused its inputs (input 'x': bad shape)")
