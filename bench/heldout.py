"""Held-out comparison of `tnx` with `nexus-paper`, for tuning the default policy.

`python -m bench.heldout [--quick]` plans seeded configurations that appear nowhere
else in the repository: synthetic profiles of 4 to 10 models (one or two GPU types)
and the H200 profiles with every model's latency and memory rescaled, GPUs of 2.5 GB
(memory binds) to unbounded, 20 to 2,000 sessions, SLO ranges from 10–60 ms to
50–200 ms. It prints GPU totals per group, the worst case, planning times, and a
memory-aware lower bound (reporting only: DESIGN.md's `lower_bound` ignores memory).
Every plan is checked by the validator.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Mapping

from bench.workloads import synthetic_profiles, zipf_sessions
from control.problem import GpuClass
from control.scheduler import schedule
from control.tables import BatchTable
from control.types import Session
from control.validate import validate_plan
from model_repo_tools.profiles import BatchPoint, LatencyCurve, Profile, ProfileSet

SEEDS = (101, 102, 103, 104, 205, 306, 407, 508, 609, 710)
MEMORY = (math.inf, 1.6e10, 8e9, 4e9, 2.5e9)


def rescaled_h200(seed: int, types: tuple[str, ...]) -> ProfileSet:
    from control.cli import DEFAULT_PROFILES

    rng = random.Random(seed)
    out = []
    for p in ProfileSet.load(DEFAULT_PROFILES).profiles:
        for ty in types:
            ls, ms = rng.uniform(0.5, 3.0), rng.uniform(0.5, 4.0)
            pts = [
                BatchPoint(
                    batch=b.batch,
                    latency_ms=round(b.latency_ms * ls, 4),
                    memory_bytes=int(b.memory_bytes * ms),
                )
                for b in p.batches
            ]
            out.append(
                Profile(
                    model=f"{p.model}x{seed}",
                    gpu_type=ty,
                    weights_bytes=int(p.weights_bytes * ms),
                    batches=pts,
                )
            )
    return ProfileSet(profiles=out)


def configs(quick: bool = False) -> list[dict]:
    rng = random.Random(12345)
    out = []
    for k, seed in enumerate(SEEDS):
        types = ("ga", "gb") if k % 3 == 1 else ("ga",)
        kind = "h200" if k % 4 == 3 else "synthetic"
        models = rng.choice([4, 6, 8, 10])
        for mem in MEMORY:
            for n in (20, 150, 600) + ((2000,) if k % 5 == 0 else ()):
                slo = rng.choice([(10, 200), (10, 60), (50, 200), (20, 100)])
                rate = rng.choice([(5, 5000), (5, 2000), (1, 500)])
                if quick and (n > 150 or k % 2):
                    continue
                c = dict(seed=seed, types=types, kind=kind, models=models, memory=mem)
                out.append(c | dict(n=n, slo=slo, rate=rate))
    return out


def memory_bound(
    sessions: list[Session], curves: Mapping[tuple[str, str], LatencyCurve], classes: list[GpuClass]
) -> int:
    """GPUs ≥ Σ_s min over (b, type) of λ·time + (1−λ)·memory share, for every λ in [0, 1]:
    each GPU holds at most 1 of either. Not DESIGN.md's bound; for reporting."""
    if not all(math.isfinite(c.memory) for c in classes):
        return 0
    per = []
    for s in sessions:
        opts = []
        for c in classes:
            if (s.model, c.gpu_type) not in curves:
                continue
            t = BatchTable.from_curve(curves[(s.model, c.gpu_type)])
            for b in range(1, t.max_batch + 1):
                lb = t.lat[b]
                if 2 * lb <= s.slo_ms and t.mem[b] <= c.memory:
                    d = min(1000.0 * b / s.rate, s.slo_ms - lb)
                    opts.append((lb / d, t.mem[b] / c.memory))
        if opts:
            per.append(opts)
    best = 0
    for k in range(21):
        lam = k / 20
        total = sum(min(lam * a + (1 - lam) * m for a, m in o) for o in per)
        best = max(best, math.ceil(total - 1e-9))
    return best


def run(quick: bool = False) -> None:
    groups: dict[str, list[int]] = {}
    worst: tuple[float, dict, int, int] | None = None
    slowest = 0.0
    for c in configs(quick):
        if c["kind"] == "synthetic":
            ps = synthetic_profiles(c["seed"], c["models"], c["types"])
        else:
            ps = rescaled_h200(c["seed"], c["types"])
        curves = ps.curves()
        models = sorted({p.model for p in ps.profiles})
        sessions = zipf_sessions(models, c["n"], c["seed"] + 1000, slo_ms=c["slo"], rate=c["rate"])
        classes = [GpuClass(t, c["memory"]) for t in c["types"]]
        t0 = time.perf_counter()
        ours = schedule(sessions, curves, classes, "tnx")
        slowest = max(slowest, time.perf_counter() - t0)
        paper = schedule(sessions, curves, classes, "nexus-paper")
        for s in (ours, paper):
            errs = validate_plan(s.plan, sessions, curves, default_memory=c["memory"])
            if errs:
                print("INVALID", c, errs[:2])
        bound = max(ours.lower_bound, memory_bound(sessions, curves, classes))
        row = (ours.gpus, paper.gpus, bound)
        keys = ["total", f"memory {c['memory']:.3g}", f"sessions {c['n']}"]
        keys.append(f"{len(c['types'])} GPU type(s)")
        for key in keys:
            acc = groups.setdefault(key, [0, 0, 0])
            for i, v in enumerate(row):
                acc[i] += v
        if ours.gpus > paper.gpus:
            print("MORE GPUs than nexus-paper:", c, ours.gpus, paper.gpus)
        saving = 1 - ours.gpus / paper.gpus if paper.gpus else 0.0
        if paper.gpus >= 10 and (worst is None or saving < worst[0]):
            worst = (saving, c, ours.gpus, paper.gpus)
    print("| group | tnx GPUs | nexus-paper | saving | bound (memory-aware) |")
    print("|---|---|---|---|---|")
    for key, (a, b, lb) in sorted(groups.items(), key=lambda kv: (kv[0] != "total", kv[0])):
        print(f"| {key} | {a} | {b} | {1 - a / b:.1%} | {lb} |")
    if worst is not None:
        saving, c, a, b = worst
        print(f"worst case (nexus-paper ≥ 10 GPUs): {a} vs {b} ({saving:.1%}): {c}")
    print(f"slowest tnx plan: {slowest:.2f} s")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
