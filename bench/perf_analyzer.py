"""Running NVIDIA's perf_analyzer against a KServe v2 endpoint and reading its CSV report.

perf_analyzer is the client Triton users already trust: if it measures the router and Triton
alike, the router speaks the protocol well enough for their tooling. It first reads
`GET /v2/models/{m}` and `/config` and, to report server-side times, the statistics
extension; an endpoint missing one of those makes it fail, which `run` returns as a row with
the error rather than raising. Concurrency mode is closed-loop (a fixed number of requests
in flight), so its throughput is what the endpoint sustains, not an offered load.
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.tools import PerfAnalyzer


@dataclass(slots=True)
class PaRow:
    target: str  # "triton" or "router"
    url: str
    concurrency: int
    throughput: float | None = None  # inferences per second
    p50_us: float | None = None
    p99_us: float | None = None
    error: str | None = None


def command(
    pa: PerfAnalyzer, model: str, url: str, csv_path: Path, concurrency: int, window_ms: int
) -> list[str]:
    return [
        str(pa.binary),
        "-m",
        model,
        "-u",
        url,
        "-i",
        "http",
        "--concurrency-range",
        str(concurrency),
        "--stability-percentage",
        "50",  # a shared 2-core machine is noisy; the default 10 % rarely settles
        "--max-trials",
        "20",
        "--input-data",
        "random",
        "--measurement-interval",
        str(window_ms),
        "-f",
        str(csv_path),
    ]


def parse_csv(text: str) -> dict[str, float]:
    """The first data row of perf_analyzer's `-f` CSV, by column name."""
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ValueError("no rows")
    return {k.strip(): float(v) for k, v in rows[0].items() if k and v not in (None, "")}


def error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    marked = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    return ((marked or lines or ["no output"])[-1])[:200]


def run(
    pa: PerfAnalyzer,
    target: str,
    model: str,
    url: str,
    workdir: Path,
    concurrency: int,
    window_ms: int = 5000,
) -> PaRow:
    workdir.mkdir(parents=True, exist_ok=True)
    csv_path, log = workdir / f"pa-{target}.csv", workdir / f"pa-{target}.log"
    csv_path.unlink(missing_ok=True)
    row = PaRow(target, url, concurrency)
    cmd = command(pa, model, url, csv_path, concurrency, window_ms)
    # 20 trials of one window at most, plus start-up and the final report.
    limit = 20 * window_ms / 1000 + 60
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=pa.env(),
            timeout=limit,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        row.error = f"no stable measurement within {limit:.0f} s"
        return row
    log.write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0 or not csv_path.is_file():
        row.error = f"exit {proc.returncode}: {error_line(proc.stdout + proc.stderr)}"
        return row
    try:
        values = parse_csv(csv_path.read_text())
        row.throughput = values["Inferences/Second"]
        row.p50_us = values.get("p50 latency")
        row.p99_us = values.get("p99 latency")
    except (ValueError, KeyError) as err:
        row.error = f"unreadable report {csv_path}: {err}"
    return row
