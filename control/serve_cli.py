"""`tnx control serve`: the control plane as a service."""

from __future__ import annotations

import os
from pathlib import Path

import typer

control_app = typer.Typer(no_args_is_help=True)


@control_app.command("serve")
def serve(
    fleet: Path = typer.Option(..., "--fleet", help="fleet.json"),
    repo: Path = typer.Option(..., "--repo", help="The fleet's model repository."),
    profiles: Path = typer.Option(..., "--profiles", help="profiles.json"),
    workload: Path = typer.Option(..., "--workload", help="workload.json (first start)"),
    router: list[str] = typer.Option(
        [],
        "--router",
        help="Router URL to read rates from (routers with --control register).",
    ),
    epoch_s: float = typer.Option(30.0, "--epoch-s", help="Seconds between re-plans."),
    window_s: float = typer.Option(5.0, "--window-s", help="Seconds of arrivals per rate."),
    state: Path = typer.Option(Path("tnx-control.sqlite"), "--state", help="SQLite state."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8100, "--port"),
    policy: str = typer.Option("tnx", "--policy"),
    token: str | None = typer.Option(None, "--token", help="Admin token (or TNX_ADMIN_TOKEN)."),
) -> None:
    """Plan, actuate on Triton and re-plan every epoch (sooner on rate changes)."""
    import uvicorn

    from control.api import create_app
    from control.service import ControlConfig, ControlPlane
    from control.store import Store
    from control.types import Workload
    from model_repo_tools.fleet import Fleet
    from model_repo_tools.profiles import ProfileSet
    from tnx.errors import UserInputError

    if epoch_s <= 0 or window_s <= 0:
        raise UserInputError(f"--epoch-s {epoch_s} / --window-s {window_s}: must be positive")
    if not repo.is_dir():
        raise UserInputError(f"--repo {repo}: not a directory")
    cp = ControlPlane(
        Fleet.load(fleet),
        repo,
        ProfileSet.load(profiles),
        Store(state),
        routers=router,
        config=ControlConfig(epoch_s=epoch_s, window_s=window_s, policy=policy),
    )
    cp.seed(Workload.load(workload))
    typer.echo(
        f"tnx control plane on http://{host}:{port} ({len(cp.sessions())} sessions, state {state})",
        err=True,
    )
    uvicorn.run(
        create_app(cp, token or os.environ.get("TNX_ADMIN_TOKEN")),
        host=host,
        port=port,
        log_level="warning",
    )
