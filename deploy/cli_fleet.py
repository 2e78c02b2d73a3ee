"""`tnx fleet up|status|down|attach`: the local fleet as a CLI, its state in a fleet.json."""

from __future__ import annotations

from pathlib import Path

import typer

from deploy.fleet import fleet_health, start_fleet, stop_fleet
from model_repo_tools.fleet import Fleet

fleet_app = typer.Typer(no_args_is_help=True)


@fleet_app.command("up")
def up(
    servers: int = typer.Option(2, "--servers", "-n", help="Number of tritonserver processes."),
    repo: Path = typer.Option(..., "--repo", help="Model repository the servers share."),
    state: Path = typer.Option(Path("fleet.json"), "--state", help="fleet.json to write."),
    tritonserver: str | None = typer.Option(
        None, "--tritonserver", help="tritonserver binary (default: $TRITONSERVER, else bundled)."
    ),
    base_port: int | None = typer.Option(
        None, "--base-port", help="Use ports base, base+1, … (default: free ports)."
    ),
    logs: Path | None = typer.Option(None, "--logs", help="Folder for server logs."),
) -> None:
    """Start N real tritonserver processes and return once every one is ready."""
    log_dir = logs or state.resolve().parent / f"{state.stem}-logs"
    fleet = start_fleet(servers, repo, log_dir, tritonserver=tritonserver, base_port=base_port)
    fleet.save(state)
    for g in fleet.gpus:
        typer.echo(f"{g.id}  {g.gpu_type}  grpc {g.server}  http {g.http}  pid {g.pid}")
    typer.echo(f"fleet of {len(fleet.gpus)} ready; state in {state}")


@fleet_app.command("attach")
def attach(
    servers: list[str] = typer.Argument(
        ..., metavar="ADDR", help="gRPC host:port of each running Triton (one per GPU)."
    ),
    gpu_type: str = typer.Option(..., "--gpu-type", help="GPU type, as profiles name it."),
    gpu_memory: int | None = typer.Option(
        None, "--gpu-memory", help="Bytes per GPU (default: read from Triton's metrics)."
    ),
    state: Path = typer.Option(Path("fleet.json"), "--state", help="fleet.json to write."),
    wait: float = typer.Option(
        0.0, "--wait", help="Seconds to wait for servers not reachable or live yet."
    ),
) -> None:
    """Write fleet.json for Triton servers that already run, if every one qualifies."""
    from deploy.attach import attach as attach_servers

    fleet = attach_servers(servers, gpu_type, gpu_memory, wait_s=wait)
    fleet.save(state)
    for g in fleet.gpus:
        typer.echo(f"{g.id}  {g.gpu_type}  {g.memory_bytes} B  grpc {g.server}  http {g.http}")
    typer.echo(f"fleet of {len(fleet.gpus)} attached; state in {state}")


@fleet_app.command("status")
def status(state: Path = typer.Option(Path("fleet.json"), "--state")) -> None:
    """Health of each server of the fleet."""
    fleet = Fleet.load(state)
    bad = 0
    for h in fleet_health(fleet):
        word = "ready" if h.ready else ("live" if h.live else ("running" if h.running else "down"))
        bad += not h.ready
        typer.echo(f"{h.id}  {word:7}  http {h.http}  pid {h.pid}  log {h.log}")
    if bad:
        raise typer.Exit(1)


@fleet_app.command("down")
def down(
    state: Path = typer.Option(Path("fleet.json"), "--state"),
    grace: float = typer.Option(10.0, "--grace", help="Seconds between terminate and kill."),
) -> None:
    """Stop every server the fleet started."""
    fleet = Fleet.load(state)
    stopped = stop_fleet(fleet, grace_s=grace)
    typer.echo(f"stopped {len(stopped)} server(s)" + (f": {', '.join(stopped)}" if stopped else ""))
