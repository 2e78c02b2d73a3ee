"""`tnx bench router` at a tiny scale: one load level for 2 s, the router and Triton's batcher,
on its own 2-server fleet. It checks the machinery, not the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.bench_router import BenchConfig, plot, run_bench, table

pytestmark = pytest.mark.integration


def test_every_request_gets_exactly_one_answer(tmp_path: Path) -> None:
    cfg = BenchConfig(out=tmp_path, loads=(0.5,), systems=("early", "triton"), duration_s=2.0)
    setup, rows = run_bench(cfg, log=lambda _: None)
    assert setup.capacity_rps > 0 and setup.slo_ms > setup.duty_cycle_ms
    assert [r.system for r in rows] == ["early", "triton"]
    for r in rows:
        assert r.sent > 0
        assert r.ok + r.dropped + r.other == r.sent
        assert r.other == 0, r.errors
        assert r.ok > 0
    assert rows[0].router_cpu_ms_per_req is not None and rows[0].router_cpu_ms_per_req > 0
    assert rows[1].router_cpu_ms_per_req is None
    assert len(table(rows)) == 4
    assert (tmp_path / "results.json").is_file()
    assert plot(rows, setup, tmp_path / "goodput.png").stat().st_size > 0
    assert not _processes_under(tmp_path), "servers or routers left running"


def _processes_under(folder: Path) -> list[int]:
    """Pids whose command line names `folder` (the fleet's repository, the router's plan)."""
    mark = str(folder).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if mark in cmdline and state != "Z":
                pids.append(int(proc.name))
    return pids
