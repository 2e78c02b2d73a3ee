"""bench.router_sim and the `even` trace: the simulated part on a hand-written plan, no fleet."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from bench.router import replay
from bench.router_report import simulated_lines
from bench.router_setup import PlanSetup, latency_cv
from bench.router_sim import load_measured, sim_row, simulated_part
from bench.router_types import BenchConfig, Results, Row
from bench.traces import synthesize
from control.types import Plan
from tnx.errors import UserInputError

LAT = {1: 4.0, 2: 5.0, 4: 7.0, 8: 10.0, 16: 18.0}  # ms
DUTY = 15.0  # headroom 1.5 × l(8): 8 / 15 ms = 533.3 req/s per server


def _stage(tmp: Path) -> PlanSetup:
    alloc = {"session": "m", "model": "m", "batch": 8, "rate": 533.333, "slo_ms": 50.0}
    gpus = [
        {"gpu": g, "gpu_type": "cpu", "duty_cycle_ms": DUTY, "allocations": [alloc]}
        for g in ("g0", "g1")
    ]
    plan = tmp / "plan.json"
    plan.write_text(json.dumps({"version": 1, "gpus": gpus, "unplaced": []}))
    batches = [{"batch": b, "latency_ms": ms} for b, ms in LAT.items()]
    profile = {"model": "m", "gpu_type": "cpu", "batches": batches}
    (tmp / "profiles.json").write_text(json.dumps({"version": 1, "profiles": [profile]}))
    return PlanSetup("m", LAT, 8, 50.0, DUTY, 1066.666, str(plan), {8: 0.05})


def _row(system: str, load: float, sent: int, in_slo: int, seconds: float = 2.0) -> Row:
    return Row(
        system, load, sent / seconds, sent, in_slo, in_slo, 0, sent - in_slo, 0, 0, 0,
        in_slo / seconds, None, None, None, 0.0,
    )  # fmt: skip


def test_even_trace_is_evenly_spaced_at_the_planned_rate(tmp_path: Path) -> None:
    plan = Plan.load(_stage(tmp_path).plan)
    times = [t for t, _ in synthesize(plan, "even", 1000.0, load=0.5)]
    assert len(times) == 534  # 0.5 × 1066.67 req/s from t = 0: 0, 1.875, ..., 999.4 ms
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 0.0 and max(gaps) - min(gaps) < 1e-9
    assert gaps[0] == pytest.approx(1000.0 / 533.333)


def test_sim_row_sums_seeds_and_divides_by_measured() -> None:
    m = _row("early", 2.0, sent=2000, in_slo=800)
    runs = [{"seconds": 2.0, "sent": 1000, "in_slo": 500, "late": 10, "dropped": 490}] * 2
    r = sim_row(m, "even", 0.05, 1.0, runs)
    assert (r.sent, r.in_slo, r.seeds) == (2000, 1000, 2)
    assert r.goodput_rps == 250.0 and r.measured_goodput_rps == 400.0
    assert r.ratio == pytest.approx(0.625) and r.in_slo_share == 0.5
    assert r.measured_in_slo == 0.4
    with pytest.raises(AssertionError, match="unaccounted"):
        sim_row(m, "even", 0.05, 1.0, [{**runs[0], "late": 0}])


def test_simulated_part_replays_each_router_level(tmp_path: Path) -> None:
    conv = _stage(tmp_path)
    overload = _row("early", 4.0, sent=8533, in_slo=2000)
    overload.mean_batch, overload.batch_ms = 8.0, 2 * LAT[8]  # live batches took twice l(8)
    rows = [
        _row("early", 0.5, sent=1066, in_slo=1066),
        overload,
        _row("triton", 0.5, sent=1066, in_slo=1066),  # not simulated
    ]
    sims = simulated_part(rows, conv, tmp_path, seconds=2.0, seeds=2)
    assert [(s.system, s.load, s.variant) for s in sims] == [
        ("early", 0.5, "even"),
        ("early", 0.5, "poisson"),
        ("early", 4.0, "even"),
        ("early", 4.0, "poisson"),
        ("early", 4.0, "even, measured batch times"),
    ]
    low, high, slow = sims[0], sims[2], sims[4]
    assert low.sent == 2 * 1066 and low.in_slo_share > 0.99
    # 4× the plan: early drop keeps goodput near the planned capacity, never above what
    # two servers can run at l(16) back to back; batches twice as slow, about half of it.
    assert 0.5 * 1066.7 < high.goodput_rps <= 2 * 16 / LAT[16] * 1000
    assert slow.speed == 2.0 and 0.3 < slow.goodput_rps / high.goodput_rps < 0.7
    text = "\n".join(simulated_lines(sims, rows, conv))
    assert "| early | 4× |" in text and "CV 0.050" in text and "2.00–2.00" in text


def test_replay_reads_back_a_finished_run(tmp_path: Path) -> None:
    conv = _stage(tmp_path)
    res = Results("tnx bench router --parts goodput", convnet=conv)
    res.goodput = [_row("early", 1.0, sent=2133, in_slo=2133)]
    cfg = BenchConfig(out=tmp_path, duration_s=2.0, sim_seeds=1)
    data = {"config": {k: str(v) for k, v in asdict(cfg).items()}, **asdict(res)}
    (tmp_path / "results.json").write_text(json.dumps(data))
    _, back, seconds = load_measured(tmp_path)
    assert back.goodput == res.goodput and back.convnet == conv and seconds == 2.0
    sims = replay(BenchConfig(out=tmp_path, parts=("simulated",), sim_seeds=1), "replay")
    assert [s.variant for s in sims.simulated] == ["even", "poisson"]
    assert len(json.loads((tmp_path / "results.json").read_text())["simulated"]) == 2
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(UserInputError, match="no goodput run"):
        load_measured(tmp_path)


def test_latency_cv() -> None:
    assert latency_cv({8: [9.0, 11.0], 1: [3.0]}) == {8: pytest.approx(0.1414, abs=1e-4), 1: 0.0}
