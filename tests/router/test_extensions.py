"""Model configuration and statistics through the router, read as perf_analyzer reads them.

The statistics accumulator on its own (pure), then a real router in front of real Triton
servers, read with tritonclient.http: the config must be Triton's own with the router's
batching, the statistics Triton's shape with counts that follow the router's traffic.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from router.driver import BatchEnded
from router.stats import ModelStats
from router.types import Answered, Dispatch, Dropped, Request
from tests.router.conftest import MODEL, PROFILED_MAX, SLO_MS, TIGHT_SLO_MS, write_inputs

# ---- the accumulator ------------------------------------------------------------------


def _request(session: str, arrival: float, n: int = 1) -> Request:
    return Request(id=arrival, session=session, arrival=arrival, deadline=arrival + 50, n_samples=n)


def test_a_model_without_traffic_has_valid_zeros() -> None:
    entry = ModelStats().model_json("m", "1", {"s": "m"})
    assert entry["name"] == "m" and entry["version"] == "1"
    assert entry["inference_count"] == entry["execution_count"] == entry["last_inference"] == 0
    assert all(d == {"count": 0, "ns": 0} for d in entry["inference_stats"].values())
    assert entry["batch_stats"] == []


def test_counts_follow_answers_drops_and_batches() -> None:
    stats = ModelStats()
    a, b = _request("s", 0.0, n=2), _request("s", 1.0, n=3)
    d = Dispatch("g0", "s", "m", (a, b), batch_id=0, n_samples=5, expected_ms=4.0)
    stats.on_event(d)
    stats.on_event(BatchEnded(d, "ok", started=2.0, finished=6.0))
    stats.on_outcome(Answered(a, None, "g0", dispatched=2.0, finished=6.0))
    stats.on_outcome(Answered(b, None, "g0", dispatched=2.0, finished=6.0))
    stats.on_outcome(Dropped(_request("s", 10.0), "deadline", at=10.5))
    stats.on_refused("s")
    stats.on_outcome(Answered(_request("other", 0.0), None, "g0", 0.0, 1.0))  # another model

    # The session left the plan: what it served still counts for its model.
    entry = stats.model_json("m", "1", {})
    inf = entry["inference_stats"]
    assert entry["inference_count"] == 5 and entry["execution_count"] == 1
    assert inf["success"] == {"count": 2, "ns": 6_000_000 + 5_000_000}
    assert inf["queue"] == {"count": 2, "ns": 2_000_000 + 1_000_000}
    assert inf["compute_infer"] == {"count": 2, "ns": 8_000_000}
    # perf_analyzer insists that the three compute counts agree.
    assert inf["compute_input"]["count"] == inf["compute_output"]["count"] == 2
    assert inf["fail"] == {"count": 2, "ns": 500_000}
    assert entry["batch_stats"] == [
        {
            "batch_size": 5,
            "compute_input": {"count": 1, "ns": 0},
            "compute_infer": {"count": 1, "ns": 4_000_000},
            "compute_output": {"count": 1, "ns": 0},
        }
    ]
    assert abs(entry["last_inference"] - time.time() * 1000) < 60_000


# ---- through a router in front of Triton ----------------------------------------------


def _client(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url.removeprefix("http://"))


@pytest.mark.integration
def test_config_is_tritons_with_the_batch_the_router_serves(
    tiny, start_router, tmp_path: Path
) -> None:
    router = start_router(*write_inputs(tmp_path, tiny))
    client = _client(router.url)
    cfg = client.get_model_config(MODEL)
    own = httpx.get(f"http://{tiny.gpus[0].http}/v2/models/{MODEL}/config").json()
    assert own["max_batch_size"] == 64 and cfg["max_batch_size"] == PROFILED_MAX
    assert "dynamic_batching" not in cfg
    # Everything else is Triton's own HTTP config, numbers as numbers.
    assert {k: v for k, v in cfg.items() if k != "max_batch_size"} == {
        k: v for k, v in own.items() if k not in ("max_batch_size", "dynamic_batching")
    }
    assert cfg["input"][0]["dims"] == [64] and cfg["output"][0]["dims"] == [16]
    assert client.get_model_config(MODEL, model_version="1") == cfg
    assert client.get_model_metadata(MODEL, model_version="1")["name"] == MODEL
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready(MODEL, model_version="7")
    for model, version in ((MODEL, "7"), ("nope", "")):
        with pytest.raises(InferenceServerException, match="version '7'|unknown model"):
            client.get_model_config(model, model_version=version)
    assert "statistics" in client.get_server_metadata()["extensions"]


@pytest.mark.integration
def test_statistics_follow_the_requests_the_router_answers(
    tiny, start_router, tmp_path: Path
) -> None:
    router = start_router(*write_inputs(tmp_path, tiny, tight=True))
    client = _client(router.url)
    (zero,) = client.get_inference_statistics(MODEL)["model_stats"]
    assert zero["inference_count"] == zero["execution_count"] == 0
    assert zero["inference_stats"]["success"] == {"count": 0, "ns": 0}

    def infer(i: int) -> None:
        c = _client(router.url)
        inp = httpclient.InferInput("input", [2, 64], "FP32")
        inp.set_data_from_numpy(np.full((2, 64), i, np.float32))
        c.infer(MODEL, [inp], headers={"X-SLO-Ms": f"{SLO_MS:g}"})

    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(infer, range(8)))
    r = httpx.post(
        f"{router.url}/v2/models/{MODEL}/infer",
        json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]
        },
        headers={"X-SLO-Ms": f"{TIGHT_SLO_MS:g}"},
    )
    assert r.status_code == 503

    (s,) = client.get_inference_statistics(MODEL)["model_stats"]
    inf = s["inference_stats"]
    assert s["name"] == MODEL and s["version"] == "1"
    assert s["inference_count"] == 16
    assert inf["success"]["count"] == inf["queue"]["count"] == inf["compute_infer"]["count"] == 8
    assert inf["compute_input"]["count"] == inf["compute_output"]["count"] == 8
    assert inf["fail"]["count"] == 1
    # Arrival to answer is the wait for dispatch plus the batch's time.
    parts = inf["queue"]["ns"] + inf["compute_infer"]["ns"]
    assert abs(inf["success"]["ns"] - parts) <= 3 * 8 and inf["compute_infer"]["ns"] > 0
    assert 1 <= s["execution_count"] <= 8
    batches = s["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batches) == s["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == 16
    assert s["last_inference"] > 0
    assert client.get_inference_statistics(MODEL, "1") == {"model_stats": [s]}
    assert client.get_inference_statistics()["model_stats"] == [s]
    with pytest.raises(InferenceServerException, match="version '2'"):
        client.get_inference_statistics(MODEL, "2")
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_inference_statistics("nope")
