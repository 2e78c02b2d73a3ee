"""Seeded synthetic workloads for the benchmark and tests: Zipf model popularity.

Session i picks its model with probability ∝ 1/rank^skew (Zipf 0.9 by default,
as in serving traces where a few models take most sessions), an SLO uniform in
[slo_min, slo_max] ms, and a rate log-uniform in [rate_min, rate_max] req/s.
"""

from __future__ import annotations

import math
import random

from control.types import Session


def zipf_sessions(
    models: list[str],
    n: int,
    seed: int,
    skew: float = 0.9,
    slo_ms: tuple[float, float] = (10.0, 200.0),
    rate: tuple[float, float] = (5.0, 5000.0),
) -> list[Session]:
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) ** skew for k in range(len(models))]
    lo, hi = math.log(rate[0]), math.log(rate[1])
    out = []
    for i in range(n):
        model = rng.choices(models, weights)[0]
        slo = round(rng.uniform(*slo_ms), 1)
        r = round(math.exp(rng.uniform(lo, hi)), 2)
        out.append(Session(id=f"s{i}", model=model, slo_ms=slo, rate=r))
    return out


def rescale(sessions: list[Session], seed: int, change: float = 0.3) -> list[Session]:
    """The same sessions, each rate moved by a factor uniform in [1 − change, 1 + change]."""
    rng = random.Random(seed)
    return [
        s.model_copy(update={"rate": round(s.rate * rng.uniform(1 - change, 1 + change), 2)})
        for s in sessions
    ]
