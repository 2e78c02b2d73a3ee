"""`tnx bench scale`: planning time and GPUs from 1,000 to 20,000 sessions, and re-plans.

Issue 15's figures. Per size: the median wall-clock time of a fresh `tnx` plan over
`--repeats` runs, its GPUs and DESIGN.md's lower bound; then, after every rate moves
by up to ±10% and ±30% (`bench.workloads.rescale`), the median time of an
incremental re-plan from that plan (`schedule(..., previous=...)`), its GPUs, its
moves ((GPU, session) loads plus unloads) and their share of the allocations, next
to the GPUs of planning the new rates from scratch. Every plan is validated.

Profiles default to held-out ones: the H200 profiles with every model's latency and
memory rescaled (`bench.heldout.rescaled_h200(101)`, one GPU type), on 80 GB GPUs, as
issue 15 was reported on; `--profiles` plans on a file instead.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from bench.heldout import rescaled_h200
from bench.workloads import rescale, zipf_sessions
from control.problem import GpuClass, pool
from control.scheduler import Schedule, schedule
from control.validate import validate_plan
from model_repo_tools.profiles import ProfileSet
from tnx.errors import UserInputError

CHANGES = (0.1, 0.3)


def _timed(fn, repeats: int) -> tuple[Schedule, float]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    assert out is not None
    return out, statistics.median(times)


def _setting(ps: ProfileSet, memory: float) -> tuple[dict, str, list[str], list[GpuClass]]:
    """(curves, the GPU type, its models, a pool of that type with `memory` per GPU)."""
    gpu_type = ps.gpu_types()[0]
    models = sorted({p.model for p in ps.profiles if p.gpu_type == gpu_type})
    return ps.curves(), gpu_type, models, pool(gpu_type, memory)


def run_scale(
    ps: ProfileSet,
    counts: list[int],
    seed: int,
    memory: float,
    repeats: int,
    max_moves: int | None,
    scratch: bool = True,
) -> Iterator[str]:
    curves, gpu_type, models, classes = _setting(ps, memory)
    yield (
        f"profiles: {len(models)} models on {gpu_type}, {memory:.3g} bytes per GPU, seed {seed}, "
        f"median of {repeats}, move budget {max_moves if max_moves is not None else 'default'}"
    )
    yield ""
    head = "| sessions | plan time (s) | GPUs | lower bound | over bound |"
    for c in CHANGES:
        pct = f"±{c:.0%}"
        head += f" {pct}: re-plan (s) | GPUs (scratch) | moves | of allocations | held back |"
    head += " valid |"
    yield head
    yield "|" + "---|" * (head.count("|") - 1)
    for n in counts:
        sessions = zipf_sessions(models, n, seed)
        fresh, t_fresh = _timed(lambda ss=sessions: schedule(ss, curves, classes), repeats)
        ok = not validate_plan(fresh.plan, sessions, curves, default_memory=memory)
        over = fresh.gpus / fresh.lower_bound - 1 if fresh.lower_bound else 0.0
        row = f"| {n} | {t_fresh:.2f} | {fresh.gpus} | {fresh.lower_bound} | {over:.1%} |"
        allocs = sum(len(g.allocations) for g in fresh.plan.gpus)
        for c in CHANGES:
            moved = rescale(sessions, seed + 1, c)
            inc, t_inc = _timed(
                lambda ss=moved, prev=fresh.plan: schedule(
                    ss, curves, classes, previous=prev, max_moves=max_moves
                ),
                repeats,
            )
            ok = ok and not validate_plan(inc.plan, moved, curves, default_memory=memory)
            ref = schedule(moved, curves, classes).gpus if scratch else "-"
            held = inc.held_back.summary() if inc.held_back else "-"
            row += (
                f" {t_inc:.2f} | {inc.gpus} ({ref}) | {inc.moves.count} "
                f"| {inc.moves.count / max(allocs, 1):.1%} | {held} |"
            )
        yield row + f" {'yes' if ok else 'NO'} |"


def run_ratios(
    ps: ProfileSet, small: int, large: int, seed: int, memory: float, rounds: int
) -> Iterator[str]:
    """Issue 15's two ratios, each round in turn in one process (the machine's load moves
    absolute times by tens of per cent between runs, less within a round): a fresh plan
    of `large` sessions against one of `small`, and the ±30% re-plan of `large` against
    planning its new rates afresh."""
    curves, _, models, classes = _setting(ps, memory)
    few, many = zipf_sessions(models, small, seed), zipf_sessions(models, large, seed)
    previous = schedule(many, curves, classes).plan
    moved = rescale(many, seed + 1, CHANGES[-1])
    pct = f"±{CHANGES[-1]:.0%}"
    yield (
        f"| round | {small} (s) | {large} (s) | {large} / {small} "
        f"| {pct} re-plan of {large} (s) | the new rates afresh (s) | re-plan / fresh |"
    )
    yield "|---|---|---|---|---|---|---|"
    ratios: list[tuple[float, float]] = []
    for r in range(1, rounds + 1):
        _, t_small = _timed(lambda: schedule(few, curves, classes), 1)
        _, t_large = _timed(lambda: schedule(many, curves, classes), 1)
        _, t_re = _timed(lambda: schedule(moved, curves, classes, previous=previous), 1)
        _, t_scratch = _timed(lambda: schedule(moved, curves, classes), 1)
        ratios.append((t_large / t_small, t_re / t_scratch))
        yield (
            f"| {r} | {t_small:.2f} | {t_large:.2f} | {t_large / t_small:.1f}x "
            f"| {t_re:.2f} | {t_scratch:.2f} | {t_re / t_scratch:.2f} |"
        )
    grow, re = zip(*ratios, strict=True)
    yield (
        f"| median | | | {statistics.median(grow):.1f}x (max {max(grow):.1f}x) | | "
        f"| {statistics.median(re):.2f} (max {max(re):.2f}) |"
    )


def bench_scale(
    profiles: Path | None = typer.Option(
        None, "--profiles", help="profiles.json (default: held-out rescaled H200 profiles)."
    ),
    sizes: str = typer.Option(
        "1000,2000,5000,10000,20000", "--sizes", help="Session counts, comma-separated."
    ),
    seed: int = typer.Option(1, "--seed", help="Workload seed."),
    gpu_memory: int = typer.Option(80_000_000_000, "--gpu-memory", help="Bytes per GPU."),
    repeats: int = typer.Option(3, "--repeats", help="Timed runs per plan (median)."),
    max_moves: int | None = typer.Option(
        None, "--max-moves", help="Move budget of each re-plan (default: the planner's)."
    ),
    no_scratch: bool = typer.Option(
        False, "--no-scratch", help="Skip planning the changed rates from scratch."
    ),
    ratios: int = typer.Option(
        0,
        "--ratios",
        help="Instead of the table: this many rounds of issue 15's ratios, the largest of "
        "--sizes against the smallest (fresh plans) and its ±30% re-plan against its fresh plan.",
    ),
) -> None:
    """Planning time, GPUs and re-plan moves at fleet scale (issue 15)."""
    try:
        counts = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise UserInputError(f"--sizes: not a list of integers: {sizes!r}") from None
    if not counts or min(counts) <= 0 or repeats <= 0:
        raise UserInputError("--sizes and --repeats: need positive numbers")
    ps = ProfileSet.load(profiles) if profiles is not None else rescaled_h200(101, ("ga",))
    if ratios > 0:
        for line in run_ratios(ps, min(counts), max(counts), seed, float(gpu_memory), ratios):
            typer.echo(line)
        return
    for line in run_scale(ps, counts, seed, float(gpu_memory), repeats, max_moves, not no_scratch):
        typer.echo(line)
