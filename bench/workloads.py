"""Seeded synthetic workloads for the benchmark and tests: Zipf model popularity.

Session i picks its model with probability ∝ 1/rank^skew (Zipf 0.9 by default,
as in serving traces where a few models take most sessions), an SLO uniform in
[slo_min, slo_max] ms, and a rate log-uniform in [rate_min, rate_max] req/s.
"""

from __future__ import annotations

import math
import random

from control.types import Session
from model_repo_tools.profiles import BatchPoint, Profile, ProfileSet


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


def synthetic_profiles(
    seed: int,
    models: int = 6,
    gpu_types: tuple[str, ...] = ("gpu-a",),
    monotone: bool = True,
) -> ProfileSet:
    """Random but plausible profiles: a fixed cost up to a knee, then linear per sample
    (as measured GPUs behave), weights plus per-sample memory; powers of two listed.
    With monotone=False the listed latencies are shuffled noise, to stress invariants."""
    rng = random.Random(seed)
    out = []
    for m in range(models):
        base = rng.uniform(0.3, 6.0)
        per = rng.uniform(0.01, 0.4)
        knee = rng.choice([1, 2, 4, 8, 16])
        weights = int(rng.uniform(1e7, 1.5e9))
        act = rng.uniform(1e6, 4e7)
        top = rng.choice([8, 16, 32, 64, 128, 256])
        for i, ty in enumerate(gpu_types):
            speed = 1.0 if i == 0 else rng.uniform(0.4, 2.5)
            batches = []
            b = 1
            while b <= top:
                lat = speed * (base + per * max(0, b - knee))
                if not monotone:
                    lat = speed * rng.uniform(0.2, 1.0) * (base + per * b)
                batches.append(
                    BatchPoint(
                        batch=b, latency_ms=round(lat, 4), memory_bytes=int(weights + act * b)
                    )
                )
                b *= 2
            out.append(Profile(model=f"m{m}", gpu_type=ty, weights_bytes=weights, batches=batches))
    return ProfileSet(profiles=out)
