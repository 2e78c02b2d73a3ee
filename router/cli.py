"""`tnx router serve`: the data plane on a plan, a fleet and profiles (DESIGN.md contracts),
given as files or taken from a control plane (`--control URL`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import typer

router_app = typer.Typer(no_args_is_help=True)


def build_service(
    plan,
    fleet,
    profiles,
    drop: str = "early",
    max_body_mb: float = 64.0,
    source: str | None = None,
    reserve_ms: float = 2.0,
    grace_ms: float | None = None,
    advertise: str | None = None,
):
    """A RouterService from contract files (paths) or already-loaded contracts."""
    from control.types import Plan
    from model_repo_tools.fleet import Fleet
    from model_repo_tools.profiles import ProfileSet
    from router.app import RouterService
    from router.types import DROP_MODES
    from tnx.cli_args import one_of
    from tnx.errors import UserInputError

    one_of("--drop", drop, DROP_MODES)
    p = plan if isinstance(plan, Plan) else Plan.load(plan)
    f = fleet if isinstance(fleet, Fleet) else Fleet.load(fleet)
    prof = profiles if isinstance(profiles, ProfileSet) else ProfileSet.load(profiles)
    curves = prof.curves()
    for g in p.gpus:
        for a in g.allocations:
            if (a.model, g.gpu_type) not in curves:
                raise UserInputError(
                    f"{source or profiles}: no profile for model {a.model!r} on gpu type "
                    f"{g.gpu_type!r} (plan gpu {g.gpu})"
                )
    return RouterService(
        p,
        f,
        curves,
        drop=drop,  # type: ignore[arg-type]
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        reserve_ms=reserve_ms,
        advertise=advertise,
        **({} if grace_ms is None else {"grace_ms": grace_ms}),
    )


@router_app.command("serve")
def serve(
    plan: Path | None = typer.Option(None, "--plan", help="plan.json"),
    fleet: Path | None = typer.Option(None, "--fleet", help="fleet.json (gRPC address per GPU)"),
    profiles: Path | None = typer.Option(None, "--profiles", help="profiles.json"),
    control: str | None = typer.Option(
        None, "--control", help="Control plane URL: take plan, fleet and profiles from it."
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    drop: str = typer.Option("early", "--drop", help="early (sliding window) | lazy | none"),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="Larger bodies get 413."),
    reserve_ms: float = typer.Option(
        2.0, "--reserve-ms", help="Milliseconds of each SLO kept back for writing the answer."
    ),
    grace_ms: float | None = typer.Option(
        None,
        "--batch-grace-ms",
        help="How long a batch may run past its last deadline (at least its expected "
        "time) before its server counts as failed. Default 50.",
    ),
    advertise: str | None = typer.Option(
        None,
        "--advertise",
        help="With --control: the URL other routers reach this one at (it registers with it "
        "and is given GPUs of its own). Default http://HOST:PORT.",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        help="With --control: this many router processes on PORT (SO_REUSEPORT), each "
        "owning its share of the GPUs and forwarding to the others.",
    ),
) -> None:
    """Serve KServe v2 on HOST:PORT, batching and dropping as the plan prescribes."""
    import uvicorn

    from router.app import create_app
    from router.workers import WorkerOptions, reachable_host, supervise
    from tnx.errors import UserInputError

    if workers < 1 or (workers > 1 and control is None):
        raise UserInputError(f"--workers {workers}: give 1, or more together with --control URL")
    if workers > 1:
        where = urlsplit(advertise).hostname if advertise else None
        opts = WorkerOptions(
            control, host, port, where or reachable_host(host), drop, max_body_mb, reserve_ms
        )
        opts.grace_ms = grace_ms
        typer.echo(f"tnx router on http://{host}:{port} ({workers} workers)", err=True)
        supervise(opts, workers)
        return
    if control is not None:
        import asyncio

        from router.follow import initial_state

        advertise = advertise or f"http://{reachable_host(host)}:{port}"
        p, revision, f, prof = asyncio.run(initial_state(control, advertise=advertise))
        service = build_service(
            p,
            f,
            prof,
            drop,
            max_body_mb,
            source=f"{control}/v1/profiles",
            reserve_ms=reserve_ms,
            grace_ms=grace_ms,
            advertise=advertise,
        )
        service.revision = revision
    elif plan and fleet and profiles:
        service = build_service(
            plan, fleet, profiles, drop, max_body_mb, reserve_ms=reserve_ms, grace_ms=grace_ms
        )
    else:
        raise UserInputError("give --plan, --fleet and --profiles, or --control URL")
    typer.echo(
        f"tnx router on http://{host}:{port} ({len(service.plan.gpus)} gpus, drop={drop})", err=True
    )
    uvicorn.run(
        create_app(service, control),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
