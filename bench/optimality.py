"""`tnx bench plan --exact`: the policies against the exact optimum on small cases.

Per case (10 to 30 sessions, Zipf 0.9 over a profile set): GPUs of `tnx` and of
`nexus-paper`; the optimum of the restricted MILP (control.exact: duty cycles at the
policies' own cycles and a geometric grid, so never worse than either policy), the
lower bound of the relaxed MILP (every cycle, judged optimistically) and DESIGN.md's
bound. `tnx`'s gap is measured against the restricted optimum (solved to optimality
within the time limit): the best plan on those cycles. Where it meets the larger of the
two bounds it is the optimum of the problem itself ("certified").
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from bench.workloads import synthetic_profiles, zipf_sessions
from control import exact
from control.problem import GpuClass, TableCache, resolve
from control.scheduler import schedule
from control.validate import validate_plan
from model_repo_tools.profiles import ProfileSet

HEADER = (
    "| case | sessions | tnx GPUs | nexus-paper | MILP (restricted) | MILP bound (relaxed) "
    "| DESIGN.md bound | tnx over the MILP optimum | optimum certified | MILP time (s) |"
)


def cases(h200: ProfileSet) -> Iterator[tuple[str, ProfileSet, int, int, float, float]]:
    """(name, profiles, sessions, seed, GPU memory, top rate): the H200 profiles, then
    held-out synthetic ones, at 10, 20 and 30 sessions, with unbounded and small memory;
    and low rates (5-500 req/s), where most sessions share a GPU."""
    for n in (10, 20, 30):
        yield "h200 141 GB", h200, n, n, 141e9, 2000.0
        yield "h200 4 GB", h200, n, n + 1, 4e9, 2000.0
        yield "synthetic (seed 301) 8 GB", synthetic_profiles(301, 5), n, n + 2, 8e9, 2000.0
        yield "synthetic (seed 302)", synthetic_profiles(302, 4), n, n + 3, math.inf, 2000.0
        low = synthetic_profiles(2, 4)
        yield "synthetic (seed 2) 8 GB, 5-500 req/s", low, n, 2, 8e9, 500.0


def run_exact(h200: ProfileSet, time_limit: float, sizes: set[int] | None = None) -> Iterator[str]:
    yield HEADER
    yield "|" + "---|" * (HEADER.count("|") - 1)
    total = {"tnx": 0, "opt": 0, "certified": 0, "cases": 0}
    for name, ps, n, seed, memory, top in cases(h200):
        if sizes is not None and n not in sizes:
            continue
        curves = ps.curves()
        gpu_type = ps.gpu_types()[0]
        models = sorted({p.model for p in ps.profiles if p.gpu_type == gpu_type})
        sessions = zipf_sessions(models, n, seed, rate=(5.0, top))
        classes = [GpuClass(gpu_type, memory)]
        ours = schedule(sessions, curves, classes, "tnx")
        paper = schedule(sessions, curves, classes, "nexus-paper")
        demands = resolve(sessions, TableCache(curves), classes).demands
        duties = [g.duty_cycle_ms for s in (ours, paper) for g in s.plan.gpus]
        best = exact.restricted(demands, ours.gpus, duties + exact.grid(demands, 8), time_limit)
        low = exact.relaxed(demands, ours.gpus, time_limit=time_limit)
        if best.plan is not None:
            errs = validate_plan(best.plan, sessions, curves, default_memory=memory)
            assert not errs, errs[:3]
        bound = max(low.bound, ours.lower_bound)
        opt = best.gpus if best.gpus is not None else ours.gpus
        certified = best.optimal and opt <= bound
        mark = "" if best.optimal else " (time limit)"
        gap = f"{(ours.gpus - opt) / opt:.0%}" if best.optimal and opt else "-"
        total["cases"] += 1
        total["tnx"] += ours.gpus
        total["opt"] += opt
        total["certified"] += certified
        yield (
            f"| {name} | {n} | {ours.gpus} | {paper.gpus} | {opt}{mark} | {low.bound} "
            f"| {ours.lower_bound} | {gap} | {'yes' if certified else 'no'} "
            f"| {best.seconds + low.seconds:.1f} |"
        )
    yield ""
    yield (
        f"total: tnx {total['tnx']} GPUs, restricted MILP {total['opt']}; the optimum "
        f"certified (restricted = relaxed bound) on {total['certified']} of {total['cases']}"
    )
