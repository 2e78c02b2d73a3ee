"""`tnx plan`: the scheduler's command (mounted by deploy/cli.py; `tnx bench plan` is in bench/).

All file handling lives here; the scheduler modules stay pure. User mistakes are
raised as TnxError subclasses, which the root prints as one line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tnx.errors import UserInputError

DEFAULT_PROFILES = Path(__file__).parent / "data" / "h200-profiles.json"


def plan(
    profiles: Path = typer.Option(..., "--profiles", help="profiles.json (batch latencies)."),
    workload: Path = typer.Option(..., "--workload", help="workload.json (sessions, queries)."),
    out: Path = typer.Option(..., "--out", help="Where to write plan.json."),
    fleet: Path | None = typer.Option(None, "--fleet", help="fleet.json: place onto these GPUs."),
    gpu_type: str | None = typer.Option(None, "--gpu-type", help="Unbounded pool of this type."),
    gpu_memory: int | None = typer.Option(None, "--gpu-memory", help="Bytes per pool GPU."),
    policy: str = typer.Option("tnx", "--policy", help="tnx | nexus-paper | batch-oblivious."),
    previous: Path | None = typer.Option(
        None, "--previous", help="The current plan.json: re-plan incrementally from it."
    ),
    max_moves: int | None = typer.Option(
        None,
        "--max-moves",
        help="With --previous: moves ((GPU, session) loads + unloads) to spend freeing "
        "GPUs, beyond those the new rates need (default: 5% of the allocations, at least 16).",
    ),
) -> None:
    """Plan the workload's sessions onto GPUs and write plan.json."""
    from control.problem import fleet_classes, pool
    from control.query_analysis import workload_query_plans
    from control.scheduler import POLICIES, schedule_workload
    from control.types import Plan, Workload
    from model_repo_tools.fleet import Fleet
    from model_repo_tools.profiles import ProfileSet
    from tnx.cli_args import one_of

    one_of("--policy", policy, POLICIES)
    if (fleet is None) == (gpu_type is None):
        raise UserInputError("give either --fleet F or --gpu-type T [--gpu-memory B]")
    if gpu_memory is not None and gpu_type is None:
        raise UserInputError("--gpu-memory goes with --gpu-type")
    if max_moves is not None and (previous is None or max_moves < 0):
        raise UserInputError("--max-moves: a count of 0 or more, with --previous")
    if gpu_memory is not None and gpu_memory <= 0:
        raise UserInputError(f"--gpu-memory: must be positive, got {gpu_memory}")
    ps = ProfileSet.load(profiles)
    wl = Workload.load(workload)
    if fleet is not None:
        fl = Fleet.load(fleet)
        if not fl.gpus:
            raise UserInputError(f"{fleet}: field gpus: no GPUs listed")
        classes = fleet_classes(fl)
    else:
        assert gpu_type is not None
        classes = pool(gpu_type, gpu_memory)
    prev = Plan.load(previous) if previous is not None else None
    result = schedule_workload(wl, ps.curves(), classes, policy, prev, max_moves)
    # Routers that run queries read their stages and budgets from the plan (added field).
    result.plan.queries = workload_query_plans(wl, result.sessions)
    result.plan.save(out)
    p = result.plan
    unplaced = f", {len(p.unplaced)} unplaced" if p.unplaced else ""
    typer.echo(
        f"{out}: {len(p.gpus)} GPUs ({policy}), lower bound {result.lower_bound}, "
        f"{sum(len(g.allocations) for g in p.gpus)} allocations{unplaced}"
    )
    if prev is not None:
        m = result.moves
        typer.echo(
            f"moves: {len(m.loads)} loads, {len(m.unloads)} unloads "
            f"({result.required_moves} for the new rates, the rest within a budget of "
            f"{result.move_budget} to free GPUs)"
        )
        hb = result.held_back
        if hb is not None and hb.gpus:
            typer.echo(f"held back: {hb.gpus} more GPUs could be freed with {hb.moves} moves")
        if hb is not None and hb.behind:
            typer.echo(
                f"about {hb.behind} GPUs over a fresh plan (estimated from the previous "
                "plan's GPUs per lower bound): later re-plans move towards it"
            )
    for u in p.unplaced:
        typer.echo(f"unplaced {u.session} ({u.rate:g} req/s): {u.reason}")
