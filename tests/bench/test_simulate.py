"""bench.simulate, bench.traces and bench.baselines: short runs on small plans."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.baselines import POLICIES, make_policy
from bench.baselines.clipper import Clipper, _share
from bench.simulate import run
from bench.traces import load_trace, read_csv, requests, synthesize, write_csv
from control.types import Plan
from deploy.cli import _mount, app
from model_repo_tools.profiles import Profile, ProfileSet
from router.testing import curves, plan
from router.types import Dispatch, Request
from tnx.errors import UserInputError


def _plan() -> Plan:
    """Two GPUs, two models; 700 req/s planned."""
    p = plan(
        ("g0", 20.0, [("a", "m", 8, 50.0), ("b", "n", 4, 40.0)]),
        ("g1", 20.0, [("a", "m", 8, 50.0), ("c", "n", 4, 60.0)]),
    )
    for g in p.gpus:
        for a in g.allocations:
            a.rate = {"a": 200.0, "b": 150.0, "c": 150.0}[a.session]
    return p


CURVES = curves(m={1: 5.0, 4: 8.0, 8: 12.0}, n={1: 3.0, 4: 6.0, 8: 11.0})


def _gaps(kind: str, seconds: float = 200.0) -> list[float]:
    p = plan(("g0", 20.0, [("s", "m", 8, 50.0)]))
    p.gpus[0].allocations[0].rate = 100.0
    times = [t for t, _ in synthesize(p, kind, seconds * 1000.0, seed=1)]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


@pytest.mark.parametrize(("kind", "cv"), [("poisson", 1.0), ("gamma:4", 4.0)])
def test_renewal_traces_keep_the_rate_and_the_cv(kind: str, cv: float) -> None:
    gaps = _gaps(kind)
    assert statistics.fmean(gaps) == pytest.approx(10.0, rel=0.1)  # 100 req/s
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, rel=0.15)


def test_diurnal_peaks_mid_run_and_azure_swings_per_minute() -> None:
    p = _plan()
    day = synthesize(p, "diurnal", 10_000.0, seed=2)
    edges = sum(1 for t, _ in day if t < 1_000 or t >= 9_000)
    middle = sum(1 for t, _ in day if 4_000 <= t < 6_000)
    assert middle > 2 * edges
    assert len(day) == pytest.approx(700 * 10, rel=0.1)
    az = synthesize(p, "azure", 10_000.0, seed=2)
    per_minute = [
        sum(1 for t, s in az if s == "a" and m * 1000 <= t < (m + 1) * 1000) for m in range(10)
    ]
    assert max(per_minute) > 1.5 * min(per_minute)  # heavy-tailed minute-to-minute counts


def test_csv_replay_round_trips_and_unknown_kinds_are_refused(tmp_path: Path) -> None:
    p = _plan()
    trace = synthesize(p, "poisson", 500.0, seed=3)
    path = tmp_path / "t.csv"
    write_csv(path, trace)
    back = read_csv(path)
    assert [s for _, s in back] == [s for _, s in trace]
    assert [t for t, _ in back] == pytest.approx([t for t, _ in trace], abs=1e-3)
    assert len(load_trace(p, str(path), 250.0)) == sum(1 for t, _ in trace if t < 250.0)
    reqs = requests(p, back[:3])
    assert all(r.deadline - r.arrival in (40.0, 50.0, 60.0) for r in reqs)
    with pytest.raises(UserInputError):
        synthesize(p, "weibull", 100.0)
    with pytest.raises(UserInputError):
        synthesize(p, "gamma:x", 100.0)


@pytest.mark.parametrize("policy", [*POLICIES, "tnx/lazy", "tnx/none"])
@pytest.mark.parametrize("trace", ["poisson", "gamma:4"])
def test_every_request_is_accounted_for(policy: str, trace: str) -> None:
    name, _, drop = policy.partition("/")
    r = run(_plan(), CURVES, policy=name, drop=drop or "early", trace=trace, seconds=1.0, load=1.5)
    assert r["sent"] > 500
    assert r["sent"] == r["in_slo"] + r["late"] + r["dropped"]
    assert sum(s["sent"] for s in r["sessions"]) == r["sent"]
    assert 0.0 < r["gpu_busy"] <= 1.0


def test_tnx_holds_the_slo_below_plan_and_leads_under_overload() -> None:
    under = run(_plan(), CURVES, seconds=2.0, load=0.9)
    assert under["in_slo"] >= 0.99 * under["sent"]
    # This small plan has slack: at 1.5x every policy still serves nearly all; 2x is past it.
    over = {p: run(_plan(), CURVES, policy=p, seconds=2.0, load=2.0) for p in POLICIES}
    for p in POLICIES:
        assert over["tnx"]["goodput_per_s"] >= over[p]["goodput_per_s"], p


def test_clipper_shares_gpus_by_need_and_backs_off_on_a_miss() -> None:
    assert _share({"x": 3.0, "y": 1.0}, 4) == ["x", "x", "x", "y"]
    assert _share({"x": 3.0, "y": 1.0, "z": 0.1}, 2) == ["x", "y"]
    c = Clipper(_plan(), CURVES)
    assert sorted(c.replicas) == ["m", "n"] and all(len(v) == 1 for v in c.replicas.values())
    gpu = c.replicas["m"][0]
    out = c.arrival(0.0, Request(0, "a", 0.0, 50.0))
    (d,) = out
    assert isinstance(d, Dispatch) and d.n_samples == 1
    c.batch_done(5.0, gpu, d.batch_id)
    assert c.limit[gpu] == 2.0
    (d,) = c.arrival(6.0, Request(1, "a", 6.0, 7.0))
    assert isinstance(d, Dispatch)
    c.batch_done(11.0, gpu, d.batch_id)  # late: the limit backs off
    assert c.limit[gpu] == pytest.approx(1.8)


def test_clockwork_and_triton_batching() -> None:
    # Clockwork: the largest batch that still meets the head's deadline; hopeless heads dropped.
    cw = make_policy("clockwork", _plan(), CURVES)
    busy = [cw.arrival(t, Request(-i, "a", t, t + 50.0)) for i, t in enumerate((0.0, 0.05))]
    assert [d.gpu for (d,) in busy] == ["g0", "g1"]  # type: ignore[union-attr]
    for i in range(1, 11):
        assert cw.arrival(0.1 * i, Request(i, "a", 0.1 * i, 0.1 * i + 50.0)) == []
    out = cw.batch_done(5.0, "g0", busy[0][0].batch_id)  # type: ignore[union-attr]
    (d,) = [a for a in out if isinstance(a, Dispatch)]
    assert d.gpu == "g0" and d.n_samples == 8
    # Triton: waits max_queue_delay (the duty cycle) for a full batch, then sends what it has.
    tr = make_policy("triton", _plan(), CURVES)
    acts = tr.arrival(0.0, Request(0, "b", 0.0, 40.0))
    assert [type(a).__name__ for a in acts] == ["WakeAt"] and acts[0].time == 20.0
    (d,) = tr.timer(20.0)
    assert isinstance(d, Dispatch) and d.n_samples == 1


def test_tnx_simulate_writes_the_result(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.json"
    _plan().save(plan_path)
    prof = tmp_path / "profiles.json"
    ProfileSet(
        profiles=[
            Profile.model_validate(
                {
                    "model": m,
                    "gpu_type": "t",
                    "batches": [{"batch": b, "latency_ms": v} for b, v in pts.items()],
                }
            )
            for m, pts in (("m", {1: 5.0, 4: 8.0, 8: 12.0}), ("n", {1: 3.0, 4: 6.0, 8: 11.0}))
        ]
    ).save(prof)
    out = tmp_path / "result.json"
    _mount()
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--plan",
            str(plan_path),
            "--profiles",
            str(prof),
            "--seconds",
            "0.5",
            "--load",
            "1.2",
            "--policy",
            "triton",
            "--trace",
            "gamma:2",
            "--out",
            str(out),
            "--plot",
            "--save-trace",
            str(tmp_path / "arrivals.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert {"sent", "in_slo", "late", "dropped", "wall_s", "p50_ms", "p99_ms", "gpu_busy"} <= set(r)
    assert r["sent"] == r["in_slo"] + r["late"] + r["dropped"] > 0
    assert "| triton | gamma:2 | 1.2x |" in res.output
    assert out.with_suffix(".png").stat().st_size > 0
    assert len(read_csv(tmp_path / "arrivals.csv")) == r["sent"]
