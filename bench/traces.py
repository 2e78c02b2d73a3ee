"""Arrival traces for `tnx simulate`: open-loop requests against a plan's sessions.

Each session's mean rate is `load` x its planned rate. The shapes (REFERENCES.md,
"Other schedulers worth a baseline"):

- `poisson`: exponential inter-arrivals (Nexus's and Clockwork's evaluations);
- `even`: evenly spaced arrivals from time 0, as k6's `constant-arrival-rate` executor
  sends them (`bench.open_loop`), so a simulation can replay a measured open-loop run;
- `gamma:CV`: Gamma inter-arrivals with coefficient of variation CV (1 is Poisson;
  2-8 are the bursts used to stress batching systems);
- `diurnal`: Poisson with a rate that follows one sine "day" over the run,
  from 0.5x to 1.5x of the mean;
- `azure`: per-minute counts shaped like the Azure Functions 2019 invocation trace
  (Shahrad et al., ATC 2020): each session's minute-to-minute count is its mean
  times a heavy-tailed (log-normal, sigma 1) factor, spread uniformly inside the
  minute; popularity across sessions is the plan's own, Zipf-like, rates;
- a CSV file of `time_ms,session` rows (a header is optional), replayed as is;
  `write_csv` saves any trace in that form (e.g. a synthesised `azure` one).
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable
from pathlib import Path

from control.types import Plan
from router.simulator import planned
from router.types import Request
from tnx.errors import UserInputError

Arrival = tuple[float, str]
"""(time in ms, session)."""

KINDS = "poisson | even | gamma:CV | diurnal | azure | FILE.csv"
# One Azure "minute", shortened for runs shorter than ten of them, so a short run still
# sees the minute-to-minute swings.
_MINUTE_MS = 60_000.0
_AZURE_SIGMA = 1.0


def _renewal(rate_ms: float, duration: float, rng: random.Random, cv: float) -> list[float]:
    if rate_ms <= 0:
        return []
    out: list[float] = []
    if cv == 1.0:
        t = rng.expovariate(rate_ms)
        while t < duration:
            out.append(t)
            t += rng.expovariate(rate_ms)
        return out
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate_ms * shape)
    t = rng.uniform(0.0, 1.0 / rate_ms)  # a random phase, not a burst of all at 0
    while t < duration:
        out.append(t)
        t += rng.gammavariate(shape, scale)
    return out


def _even(rate_ms: float, duration: float) -> list[float]:
    if rate_ms <= 0:
        return []
    # Multiplying, not summing a gap, so a long run does not drift off the rate.
    times = (i / rate_ms for i in range(math.ceil(duration * rate_ms) + 1))
    return [t for t in times if t < duration]


def _thinned(rate_at, peak_ms: float, duration: float, rng: random.Random) -> list[float]:
    """Non-homogeneous Poisson arrivals by thinning (Lewis and Shedler)."""
    out: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak_ms)
        if t >= duration:
            return out
        if rng.random() * peak_ms <= rate_at(t):
            out.append(t)


def _azure(rate_ms: float, duration: float, rng: random.Random) -> list[float]:
    minute = min(_MINUTE_MS, duration / 10)
    mu = -_AZURE_SIGMA * _AZURE_SIGMA / 2  # mean factor 1
    out: list[float] = []
    start = 0.0
    while start < duration:
        end = min(start + minute, duration)
        mean = rate_ms * (end - start) * rng.lognormvariate(mu, _AZURE_SIGMA)
        n = _poisson_count(mean, rng)
        out.extend(sorted(rng.uniform(start, end) for _ in range(n)))
        start = end
    return out


def _poisson_count(mean: float, rng: random.Random) -> int:
    if mean > 50:  # normal approximation: exact counts do not matter at this size
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    n, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def synthesize(
    plan: Plan, kind: str, duration_ms: float, *, load: float = 1.0, seed: int = 0
) -> list[Arrival]:
    """Arrivals of `kind` (see the module docstring; not a file) for `duration_ms`."""
    rates, _ = planned(plan)
    rng = random.Random(seed)
    out: list[Arrival] = []
    for session in sorted(rates):
        r = rates[session] * load / 1000.0
        if kind == "poisson":
            times = _renewal(r, duration_ms, rng, 1.0)
        elif kind == "even":
            times = _even(r, duration_ms)
        elif kind.startswith("gamma:"):
            times = _renewal(r, duration_ms, rng, _cv(kind))
        elif kind == "diurnal":
            w = 2 * math.pi / duration_ms

            def rate_at(t: float, r: float = r, w: float = w) -> float:
                return r * (1.0 - 0.5 * math.cos(w * t))

            times = _thinned(rate_at, 1.5 * r, duration_ms, rng) if r > 0 else []
        elif kind == "azure":
            times = _azure(r, duration_ms, rng)
        else:
            raise UserInputError(f"--trace: unknown {kind!r} (choose {KINDS})")
        out.extend((t, session) for t in times)
    out.sort()
    return out


def _cv(kind: str) -> float:
    try:
        cv = float(kind.split(":", 1)[1])
    except ValueError:
        raise UserInputError(f"--trace: {kind!r}: CV is not a number") from None
    if cv <= 0:
        raise UserInputError(f"--trace: {kind!r}: CV must be positive")
    return cv


def read_csv(path: Path) -> list[Arrival]:
    """`time_ms,session` rows (a first row that is not a number is a header)."""
    out: list[Arrival] = []
    try:
        with path.open(newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                if not row:
                    continue
                if len(row) < 2:
                    raise UserInputError(f"{path}: row {i + 1}: want time_ms,session")
                try:
                    t = float(row[0])
                except ValueError:
                    if i == 0:
                        continue
                    raise UserInputError(f"{path}: row {i + 1}: time {row[0]!r}") from None
                out.append((t, row[1]))
    except OSError as err:
        raise UserInputError(f"{path}: {err.strerror}") from None
    out.sort()
    return out


def write_csv(path: Path, arrivals: Iterable[Arrival]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_ms", "session"])
        w.writerows((f"{t:.4f}", s) for t, s in arrivals)


def load_trace(
    plan: Plan, trace: str, duration_ms: float, *, load: float = 1.0, seed: int = 0
) -> list[Arrival]:
    """`trace` is a kind (`synthesize`) or a CSV file (`read_csv`, cut at `duration_ms`)."""
    if trace.endswith(".csv") or Path(trace).is_file():
        return [a for a in read_csv(Path(trace)) if a[0] < duration_ms]
    return synthesize(plan, trace, duration_ms, load=load, seed=seed)


def requests(plan: Plan, arrivals: Iterable[Arrival]) -> list[Request]:
    """Requests with deadline = arrival + the session's SLO (SLO 0 for sessions the plan
    does not know: the policy refuses those `no_session`)."""
    _, slos = planned(plan)
    return [Request(i, s, t, t + slos.get(s, 0.0)) for i, (t, s) in enumerate(arrivals)]
