"""`tnx bench scaleout`'s figures from counts (bench.scaleout): shares, CPU per request, sizing."""

from __future__ import annotations

from bench.open_loop import Counts
from bench.scaleout import Level, Results, SetupResult, capacity_rows, level_of, report


def test_level_from_counts_forwards_and_cpu() -> None:
    c = Counts("main", 0.0, 10.0, 400.0, sent=4000, in_slo=3960, s503=40, p50_ms=3.0, p99_ms=9.0)
    lv = level_of(400.0, c, forwarded=2000, cpu_s=2.4, idle_s=0.4)
    assert (lv.in_slo, lv.s503, lv.other) == (0.99, 0.01, 0)
    assert lv.forwarded == 0.5 and abs(lv.cpu_ms - 0.6) < 1e-9
    assert abs(lv.marginal_ms - 0.5) < 1e-9


def test_capacity_rows_scale_with_cores() -> None:
    rows = capacity_rows(0.5, cores=(1, 4))
    assert rows[2:] == ["| 1 | 2,000 |", "| 4 | 8,000 |"]


def test_report_sizes_from_the_highest_rate_held() -> None:
    low = Level(100.0, 1000, 1.0, 0.0, 0, 2.0, 8.0, 0.5, 2.0, 1.0)
    ok = Level(300.0, 3000, 0.995, 0.005, 0, 2.0, 8.0, 0.5, 0.8, 0.6)
    missed = Level(900.0, 9000, 0.7, 0.3, 0, 30.0, 60.0, 0.5, 0.4, 0.3)
    res = Results("tnx bench scaleout", setups=[SetupResult("2 routers", 2, [low, ok, missed])])
    res.forward = {
        "direct_p50_ms": 2.0,
        "direct_p99_ms": 5.0,
        "forwarded_p50_ms": 2.6,
        "forwarded_p99_ms": 6.0,
    }
    text = "\n".join(report(res))
    assert "| 2 routers | 300 | 3000 | 99.5% | 0.5% | 0 | 2.0 | 8.0 | 50% | 0.80 | 0.60 |" in text
    assert "adds 0.60 ms at p50" in text
    assert "| 1 | 1,667 |" in text  # 0.6 ms a request beyond idle: the highest rate held
