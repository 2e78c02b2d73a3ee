"""`tnx bench plan`: the scheduler on Zipf-0.9 workloads over a profile set.

Per case: GPUs used by each policy, DESIGN.md's lower bound, the default policy's
planning time, and after every rate moves by up to ±30%: the GPUs and moves of an
incremental re-plan, next to those of planning from scratch. Every plan is checked
by the validator; the `valid` column says whether all of them passed. A second table
plans heads on common backbones with and without prefix batching (bench.prefix_workload).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import typer

from bench.prefix_workload import heads_on_backbones
from bench.workloads import rescale, zipf_sessions
from control.cli import DEFAULT_PROFILES
from control.incremental import diff
from control.problem import pool
from control.scheduler import schedule
from control.validate import validate_plan
from model_repo_tools.profiles import ProfileSet
from tnx.errors import UserInputError

HEADER = (
    "| sessions | tnx GPUs | nexus-paper | batch-oblivious | lower bound | tnx plan time (s) "
    "| after ±30%: GPUs | moves (incremental) | moves (from scratch) | valid |"
)


def run_bench(ps: ProfileSet, counts: list[int], seed: int, memory: float) -> Iterator[str]:
    curves = ps.curves()
    gpu_type = ps.gpu_types()[0]
    models = sorted({p.model for p in ps.profiles if p.gpu_type == gpu_type})
    classes = pool(gpu_type, memory)
    yield f"profiles: {len(models)} models on {gpu_type}, {memory:.3g} bytes per GPU, seed {seed}"
    yield ""
    yield HEADER
    yield "|" + "---|" * (HEADER.count("|") - 1)
    for n in counts:
        sessions = zipf_sessions(models, n, seed)
        t0 = time.perf_counter()
        ours = schedule(sessions, curves, classes, "tnx")
        elapsed = time.perf_counter() - t0
        paper = schedule(sessions, curves, classes, "nexus-paper")
        alone = schedule(sessions, curves, classes, "batch-oblivious")
        moved = rescale(sessions, seed + 1)
        inc = schedule(moved, curves, classes, "tnx", previous=ours.plan)
        scratch = schedule(moved, curves, classes, "tnx")
        checks = [(s.plan, sessions) for s in (ours, paper, alone)]
        checks += [(inc.plan, moved), (scratch.plan, moved)]
        ok = all(not validate_plan(p, ss, curves, default_memory=memory) for p, ss in checks)
        yield (
            f"| {n} | {ours.gpus} | {paper.gpus} | {alone.gpus} | {ours.lower_bound} "
            f"| {elapsed:.2f} | {inc.gpus} (scratch {scratch.gpus}) | {inc.moves.count} "
            f"| {diff(ours.plan, scratch.plan).count} | {'yes' if ok else 'NO'} |"
        )


SHARE_HEADER = (
    "| heads per backbone | sessions | GPUs, prefixes shared | GPUs, models whole "
    "| saved | lower bound (whole) | valid |"
)


def run_sharing(ps: ProfileSet, heads: list[int], seed: int, memory: float) -> Iterator[str]:
    """Heads on common backbones (bench.prefix_workload): the tnx plan with each backbone's
    prefix batched across its heads (control.prefix_plan) against every model whole."""
    gpu_type = ps.gpu_types()[0]
    classes = pool(gpu_type, memory)
    yield SHARE_HEADER
    yield "|" + "---|" * (SHARE_HEADER.count("|") - 1)
    for n in heads:
        split, whole, sessions = heads_on_backbones(ps, gpu_type, n, seed)
        shared = schedule(sessions, split, classes, "tnx")
        alone = schedule(sessions, whole, classes, "tnx")
        ok = not validate_plan(shared.plan, sessions, split, default_memory=memory)
        ok = ok and not validate_plan(alone.plan, sessions, whole, default_memory=memory)
        yield (
            f"| {n} | {len(sessions)} | {shared.gpus} | {alone.gpus} "
            f"| {alone.gpus - shared.gpus} | {alone.lower_bound} | {'yes' if ok else 'NO'} |"
        )


def bench_plan(
    profiles: Path = typer.Option(DEFAULT_PROFILES, "--profiles", help="profiles.json to plan on."),
    seed: int = typer.Option(0, "--seed", help="Workload seed."),
    sizes: str = typer.Option("20,200,2000", "--sizes", help="Session counts, comma-separated."),
    gpu_memory: int = typer.Option(
        141_000_000_000, "--gpu-memory", help="Bytes per GPU (H200: 141 GB)."
    ),
    heads: str = typer.Option(
        "10,20", "--heads", help="Heads per backbone for the prefix-sharing table ('' for none)."
    ),
    exact: bool = typer.Option(
        False, "--exact", help="Instead: small cases against the exact MILP optimum."
    ),
    exact_time: float = typer.Option(60.0, "--exact-time", help="Seconds per MILP, at most."),
) -> None:
    """GPUs per policy, lower bound, planning time and moves on Zipf-0.9 workloads."""
    try:
        counts = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise UserInputError(f"--sizes: not a list of integers: {sizes!r}") from None
    if not counts or min(counts) <= 0:
        raise UserInputError(f"--sizes: need positive session counts, got {sizes!r}")
    ps = ProfileSet.load(profiles)
    if exact:
        from bench.optimality import run_exact

        for line in run_exact(ps, exact_time, set(counts) if sizes != "20,200,2000" else None):
            typer.echo(line)
        return
    for line in run_bench(ps, counts, seed, float(gpu_memory)):
        typer.echo(line)
    per = [int(x) for x in heads.split(",") if x.strip()]
    if per:
        typer.echo("")
        typer.echo(f"heads on common backbones (each profiled model a backbone), seed {seed}:")
        for line in run_sharing(ps, per, seed, float(gpu_memory)):
            typer.echo(line)
