"""`tnx repo add|check`: Triton model repositories."""

from __future__ import annotations

from pathlib import Path

import typer

repo_app = typer.Typer(no_args_is_help=True)


@repo_app.command("add")
def add(
    models: list[Path] = typer.Argument(..., help="MODEL.onnx files (from tnx export)."),
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
    share_prefix: bool = typer.Option(
        False,
        "--share-prefix",
        help="Store prefixes the models share once; each model name serves as before.",
    ),
) -> None:
    """Add ONNX models to a repository, configs built from Triton's protobuf."""
    from model_repo_tools.config import BACKENDS
    from model_repo_tools.repository import add_model
    from tnx.cli_args import one_of
    from tnx.errors import UserInputError

    backend = one_of("--backend", backend, BACKENDS)
    instance_kind = one_of("--instance-kind", instance_kind, ("auto", "cpu", "gpu"))
    if name is not None and len(models) > 1:
        raise UserInputError("--name names one model; give one MODEL.onnx with it")
    if share_prefix:
        _add_shared(models, repo, backend, max_batch, instance_kind)
        return
    for model in models:
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


def _add_shared(
    models: list[Path], repo: Path, backend: str, max_batch: int, instance_kind: str
) -> None:
    from model_repo_tools.shared_prefix import add_shared, model_bytes

    stored = add_shared(models, repo, backend, max_batch, instance_kind)  # type: ignore[arg-type]
    for prefix, members in stored.groups.items():
        typer.echo(f"{repo / prefix}: shared prefix of {', '.join(members)}, stored once")
        for m in members:
            typer.echo(f"{repo / m}: ensemble {prefix} -> {prefix}__{m}")
    for m in stored.whole:
        typer.echo(f"{repo / m}: shares no prefix, stored whole")
    before = sum(p.stat().st_size for p in models)
    written = [f.name for f in stored.folders]
    after = model_bytes(repo, dict.fromkeys(written))
    typer.echo(
        f"model bytes: {after / 1e6:.3f} MB stored for {before / 1e6:.3f} MB of ONNX files "
        f"({100.0 * (before - after) / max(before, 1):.1f} % saved)"
    )


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
    from model_repo_tools.prefix_names import parts

    shared: dict[str, list[str]] = {}
    for model, (prefix, _) in sorted(parts(models).items()):
        shared.setdefault(prefix, []).append(model)
    for prefix, members in shared.items():
        typer.echo(f"  {prefix}: prefix shared by {', '.join(members)} (ensembles)")


def profile(
    fleet: Path = typer.Option(..., "--fleet", help="fleet.json of live servers."),
    repo: Path = typer.Option(..., "--repo", help="The servers' model repository."),
    model: list[str] = typer.Option([], "--model", help="Models to profile (default: all)."),
    batches: str = typer.Option("1,2,4,8,16,32", "--batches"),
    runs: int = typer.Option(5, "--runs", help="Timed runs of each batch size per round."),
    percentile: float = typer.Option(
        50.0, "--percentile", help="Latency percentile recorded as l(b) (50: the median)."
    ),
    tolerance: float = typer.Option(
        0.01, "--tolerance", help="Stable when no size's statistic moves more than this, relative."
    ),
    max_rounds: int = typer.Option(200, "--max-rounds", help="Most rounds per model."),
    budget: float = typer.Option(30.0, "--budget", help="Most seconds of rounds per model."),
    out: Path = typer.Option(Path("profiles.json"), "--out"),
) -> None:
    """Measure latency per batch size and memory of each model on a live server."""
    from rich.console import Console

    from model_repo_tools.fleet import Fleet
    from model_repo_tools.profiler import ProfileSettings, StabilityRule, measure_fleet
    from model_repo_tools.profiles import ProfileSet
    from tnx.cli_args import numbers
    from tnx.errors import UserInputError

    sizes = tuple(sorted(set(numbers("--batches", batches, int))))
    if runs < 1 or max_rounds < 1 or budget <= 0:
        raise UserInputError("--runs, --max-rounds and --budget must be positive")
    if not 0 < percentile < 100 or tolerance <= 0:
        raise UserInputError("--percentile must lie in (0, 100) and --tolerance be positive")
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
    settings = ProfileSettings(
        batches=sizes,
        runs=runs,
        percentile=percentile,
        stability=StabilityRule(tolerance=tolerance),
        max_rounds=max_rounds,
        budget_s=budget,
    )
    console = Console(stderr=True)
    runs_done = []
    with console.status("profiling") as status:
        for run in measure_fleet(
            fl.gpus,
            model or available,
            settings,
            progress=lambda msg: status.update(f"profiling {msg}"),
        ):
            runs_done.append(run)
    ProfileSet(profiles=[r.profile for r in runs_done]).save(out)
    statistic = "median" if percentile == 50 else f"p{percentile:g}"
    for r in runs_done:
        p = r.profile
        verdict = (
            f"stable after {r.rounds} rounds"
            if r.stable
            else f"NOT stable after {r.rounds} rounds (budget spent; re-run on a quieter machine)"
        )
        typer.echo(
            f"{p.model} on {p.gpu_type}: {statistic} of one batch, {verdict}, "
            f"{r.elapsed_s:.1f} s; holds {p.weights_bytes / 1e6:.1f} MB"
        )
        typer.echo(
            f"  {'batch':>5}  {'l(b) ms':>8}  {'measured':>8}  {'p10-p90 ms':>15}  "
            f"{'n':>5}  {'memory MB':>9}"
        )
        for q in p.batches:
            typer.echo(
                f"  {q.batch:>5}  {q.latency_ms:>8.3f}  {r.measured_ms[q.batch]:>8.3f}  "
                f"{f'{q.p10_ms:.3f}-{q.p90_ms:.3f}':>15}  {q.samples:>5}  "
                f"{q.memory_bytes / 1e6:>9.1f}"
            )
    typer.echo(f"wrote {out}")
