"""`tnx repo add|check`: Triton model repositories."""

from __future__ import annotations

from pathlib import Path

import typer

repo_app = typer.Typer(no_args_is_help=True)


@repo_app.command("add")
def add(
    model: Path = typer.Argument(..., help="MODEL.onnx (from tnx export)."),
    repo: Path = typer.Option(..., "--repo", help="Repository folder (created if missing)."),
    backend: str = typer.Option("python", "--backend", help="python | onnxruntime | tensorrt"),
    max_batch: int = typer.Option(64, "--max-batch", help="max_batch_size of the config."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the file's stem)."),
    instance_kind: str = typer.Option("auto", "--instance-kind", help="auto | cpu | gpu"),
    instances: int = typer.Option(1, "--instances", help="Instances per server."),
    dynamic_batching: bool = typer.Option(
        False,
        "--dynamic-batching/--no-dynamic-batching",
        help="Let Triton batch (off: the tnx router batches).",
    ),
) -> None:
    """Add an ONNX model to a repository, config built from Triton's protobuf."""
    from exporters.errors import RepositoryError
    from model_repo_tools.config import BACKENDS
    from model_repo_tools.repository import add_model

    if backend not in BACKENDS:
        raise RepositoryError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if instance_kind not in ("auto", "cpu", "gpu"):
        raise RepositoryError(f"--instance-kind {instance_kind!r}: expected auto, cpu or gpu")
    folder = add_model(
        model,
        repo,
        backend=backend,
        max_batch=max_batch,
        name=name,
        instance_kind=instance_kind,
        instance_count=instances,
        dynamic_batching=dynamic_batching,
    )
    typer.echo(f"{folder}: {backend} model, max_batch_size {max_batch}")


@repo_app.command("check")
def check(repo: Path = typer.Argument(..., help="Repository folder.")) -> None:
    """Parse every config.pbtxt, check its files and that its I/O matches the ONNX model."""
    from model_repo_tools.check import check_repository

    problems = check_repository(repo)
    models = sorted(
        p.name for p in Path(repo).iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    for p in problems:
        typer.echo(str(p), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {repo}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{repo}: {len(models)} model(s) ok: {', '.join(models)}")


def profile(
    fleet: Path = typer.Option(..., "--fleet", help="fleet.json of live servers."),
    repo: Path = typer.Option(..., "--repo", help="The servers' model repository."),
    model: list[str] = typer.Option([], "--model", help="Models to profile (default: all)."),
    batches: str = typer.Option("1,2,4,8,16,32", "--batches"),
    runs: int = typer.Option(20, "--runs", help="Timed runs per batch size."),
    percentile: float = typer.Option(90.0, "--percentile", help="Latency percentile recorded."),
    out: Path = typer.Option(Path("profiles.json"), "--out"),
) -> None:
    """Measure latency per batch size and memory of each model on a live server."""
    from rich.console import Console

    from exporters.errors import UserInputError
    from model_repo_tools.fleet import Fleet
    from model_repo_tools.profiler import ProfileSettings, profile_fleet
    from model_repo_tools.profiles import ProfileSet

    try:
        sizes = tuple(sorted({int(b) for b in batches.split(",") if b.strip()}))
    except ValueError:
        raise UserInputError(f"--batches {batches!r}: expected sizes like 1,2,4,8") from None
    if not sizes or sizes[0] < 1:
        raise UserInputError(f"--batches {batches!r}: sizes must be positive")
    fl = Fleet.load(fleet)
    if not fl.gpus:
        raise UserInputError(f"{fleet}: no servers in the fleet")
    available = (
        sorted(p.name for p in Path(repo).iterdir() if (p / "config.pbtxt").is_file())
        if Path(repo).is_dir()
        else []
    )
    if not Path(repo).is_dir():
        raise UserInputError(f"--repo {repo}: not a directory")
    missing = [m for m in model if m not in available]
    if missing:
        raise UserInputError(
            f"model {missing[0]!r} is not in the repository {repo} "
            f"(it has {', '.join(available) or 'no models'})"
        )
    settings = ProfileSettings(batches=sizes, runs=runs, percentile=percentile)
    console = Console(stderr=True)
    with console.status("profiling") as status:
        profiles = profile_fleet(
            fl.gpus,
            model or available,
            settings,
            progress=lambda msg: status.update(f"profiling {msg}"),
        )
    ProfileSet(profiles=profiles).save(out)
    for p in profiles:
        pts = ", ".join(f"b{q.batch}={q.latency_ms:.2f}ms" for q in p.batches)
        typer.echo(f"{p.model} on {p.gpu_type}: {pts}; holds {p.weights_bytes / 1e6:.1f} MB")
    typer.echo(f"wrote {out}")
