"""Heads on one H200 backbone through the router's policy in the simulator, with and without
prefix batching: `python -m bench.prefix_sim [--heads 2,20] [--backbone resnet50]`.

The issue's case (Nexus §5): N heads on one backbone (bench.prefix_workload: a head costs
0.05 ms + 3 % of its backbone's l(b)), one GPU, every head a session of equal rate with
the same planned batch (64 requests a round in all). Served whole, each head is one model
whose l(b) is backbone + head; served split, the router runs one prefix batch across the
heads and a suffix batch each (router.prefix_batch). Poisson arrivals at rising offered
rates through the same policy code the router runs (router.simulator, true batch times
from the profiles); reported: the goodput (answers within the SLO per second) at each
rate, and the best of each, the throughput at saturation.
"""

from __future__ import annotations

import argparse
import math

from bench.prefix_workload import heads_on_backbones
from control.cli import DEFAULT_PROFILES
from control.types import Plan
from model_repo_tools.profiles import ProfileSet
from router.simulator import poisson_arrivals, simulate

SLO_MS = 100.0
ROUND = 64  # requests per round of all heads, as in the example


def _plan(gpu_type: str, models: list[str], batch: int, rate: float) -> Plan:
    allocs = [
        {"session": m, "model": m, "batch": batch, "rate": rate, "slo_ms": SLO_MS} for m in models
    ]
    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": "g0",
                    "gpu_type": gpu_type,
                    "duty_cycle_ms": SLO_MS / 2,
                    "allocations": allocs,
                }
            ]
        }
    )


def run(heads: int, backbone: str, duration_ms: float = 2000.0) -> list[str]:
    ps = ProfileSet.load(DEFAULT_PROFILES)
    gpu_type = ps.gpu_types()[0]
    one = ProfileSet(profiles=[p for p in ps.profiles if p.model == backbone])
    split, whole, _ = heads_on_backbones(one, gpu_type, heads, seed=0)
    models = [m for (m, _) in whole]
    batch = math.ceil(ROUND / heads)
    lines = [
        f"{heads} heads on {backbone} ({gpu_type}), batch {batch} each, SLO {SLO_MS:g} ms, "
        f"{duration_ms / 1000:g} s per rate",
        "| offered req/s | goodput, whole | goodput, prefix batched |",
        "|---|---|---|",
    ]
    best = {"whole": 0.0, "shared": 0.0}
    for total in (1000, 2000, 4000, 8000, 12000, 16000, 24000):
        plan = _plan(gpu_type, models, batch, total / heads)
        row = []
        for name, curves in (("whole", whole), ("shared", split)):
            trace = poisson_arrivals(plan, duration_ms, seed=1)
            stats = simulate(plan, curves, trace).stats()
            best[name] = max(best[name], stats.goodput)
            row.append(f"{stats.goodput:.0f}")
        lines.append(f"| {total} | {row[0]} | {row[1]} |")
    lines.append(
        f"saturation: whole {best['whole']:.0f} req/s, prefix batched {best['shared']:.0f} "
        f"req/s ({best['shared'] / max(best['whole'], 1e-9):.2f}x)"
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", default="2,20")
    ap.add_argument("--backbone", default="resnet50")
    args = ap.parse_args()
    for n in (int(x) for x in args.heads.split(",")):
        for line in run(n, args.backbone):
            print(line)
        print()


if __name__ == "__main__":
    main()
