"""The k6 load generator's accounting, against a local HTTP server whose answers are known, and
the pure pieces of the router benchmark (recovery, perf_analyzer's report, the tables)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.open_loop import Body, Counts, LoadResult, LoadSpec, Phase, find_k6, run_load, vus_for
from bench.perf_analyzer import error_line, parse_csv
from bench.router_parts import recovered_after
from bench.router_report import lines
from bench.router_types import BenchConfig, LatencyRow, MaxRateRow, Results

needs_k6 = pytest.mark.skipif(find_k6() is None, reason="k6 not installed")

# Answers cycle through: 200 at once, 200 after the SLO, 503, 500.
SLO_MS = 100
SLOW_S = 0.25


@pytest.fixture
def server() -> Iterator[str]:
    turn = itertools.count()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                i = next(turn) % 4
            if i == 1:
                time.sleep(SLOW_S)
            self.send_response((200, 200, 503, 500)[i])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v2/models/m/infer"
    finally:
        httpd.shutdown()
        httpd.server_close()


@needs_k6
def test_every_request_is_counted_once(server: str, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b'{"inputs":[]}' + bytes(64))
    spec = LoadSpec(
        [server, server],
        Body(body, 13),
        SLO_MS,
        (Phase("busy", 40, 1), Phase("after", 20, 2, per_second=True)),
        worst_ms=1000,
        timeout_s=5,
    )
    res = run_load(spec, tmp_path, "t")
    assert sorted(res.scenarios) == ["after_s0", "after_s1", "busy"]
    for c in res.scenarios.values():
        assert c.sent > 0 and c.dropped == 0
        assert c.in_slo + c.late + c.s503 + c.other == c.sent
    total = res.phase("busy") + res.phase("after")
    # The server answers in a strict cycle, so each outcome is a quarter of the whole.
    for n in (total.in_slo, total.late, total.s503, total.other):
        assert abs(n - total.sent / 4) <= 1
    assert res.phase("busy").p99_ms is not None and res.phase("busy").p99_ms >= SLOW_S * 1000
    assert res.errors and "status 500" in res.errors[0]
    assert [c.start_s for c in res.seconds("after")] == [1.0, 2.0]


def test_vus_cover_rate_times_latency() -> None:
    pre, most = vus_for(1000, 50, 1000)
    assert 75 <= pre < most and most >= 1000
    assert vus_for(10**6, 10**5, 10**5) == (6000, 6000)


def test_recovery_is_the_first_second_from_which_all_hold() -> None:
    assert recovered_after([1.0, 1.0], 0.99) == 0
    assert recovered_after([0.5, 1.0, 0.9, 0.995, 1.0], 0.99) == 3
    assert recovered_after([1.0, 0.5], 0.99) is None


def test_per_second_counts_add_up() -> None:
    seconds = {
        f"low_s{i}": Counts(f"low_s{i}", float(i), 1.0, 10.0, sent=10, in_slo=9, s503=1)
        for i in range(3)
    }
    total = LoadResult(seconds).phase("low")
    assert (total.sent, total.in_slo, total.s503, total.duration_s) == (30, 27, 3, 3.0)


def test_perf_analyzer_csv_and_errors() -> None:
    csv = (
        "Concurrency,Inferences/Second,Client Send,p50 latency,p90 latency,p95 latency,"
        "p99 latency\n8,4841.21,157,1297,2331,3210,6898\n"
    )
    v = parse_csv(csv)
    assert v["Inferences/Second"] == pytest.approx(4841.21) and v["p99 latency"] == 6898
    out = "*** Measurement Settings ***\nerror: failed to get model config: 404 Not Found\n"
    assert error_line(out) == "error: failed to get model config: 404 Not Found"


def test_report_has_every_part_that_ran() -> None:
    res = Results("tnx bench router --duration 3")
    res.latency = [
        LatencyRow("triton", 50, 150, 150, 0, 0, 0, 0, 1.0, 3.0),
        LatencyRow("router", 50, 150, 150, 0, 0, 0, 0, 2.5, 6.0),
    ]
    res.max_rate = [
        MaxRateRow("triton", 500, 2500, 2500, 0, 0, 0, 0, 4.0, True),
        MaxRateRow("router", 500, 2500, 2400, 100, 0, 0, 0, 60.0, False),
    ]
    text = "\n".join(lines(res, BenchConfig(out=Path("."))))
    assert "command: `tnx bench router --duration 3`" in text
    assert "p50 +1.50 ms, p99 +3.00 ms" in text
    assert "router none of the rates, triton 500 req/s" in text
    assert "Goodput" not in text
