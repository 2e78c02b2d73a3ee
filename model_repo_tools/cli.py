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
