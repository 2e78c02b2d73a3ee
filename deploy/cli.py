"""The `tnx` command: one Typer app with a sub-app per package.

It sits in deploy/ because it is the one place allowed to import every package.
Each package keeps its commands in its own `cli.py`; this module only mounts them
and turns the project's errors into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys

import typer

from tnx.errors import TnxError

app = typer.Typer(
    name="tnx",
    help="Control plane for fleets of NVIDIA Triton Inference Servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks: each prints a table to record in BENCHMARKS.md.", no_args_is_help=True
)


def _export() -> None:
    from exporters.cli import export

    app.command("export", help="Export a torch module to ONNX (and TensorRT), verified.")(export)


def _repo() -> None:
    from model_repo_tools.cli import repo_app

    app.add_typer(repo_app, name="repo", help="Triton model repositories.")


def _prefix() -> None:
    from exporters.prefix_cli import prefix_app

    app.add_typer(prefix_app, name="prefix", help="Shared prefixes of ONNX models (Nexus).")


def _fleet() -> None:
    from deploy.cli_fleet import fleet_app

    app.add_typer(fleet_app, name="fleet", help="A local fleet of real tritonserver processes.")


def _profile() -> None:
    from model_repo_tools.cli import profile

    app.command("profile", help="Profile models' batch latency and memory on a live server.")(
        profile
    )


def _plan() -> None:
    from control.cli import plan

    app.command("plan", help="Plan sessions onto GPUs (Nexus squishy bin packing).")(plan)


def _control() -> None:
    from control.serve_cli import control_app

    app.add_typer(control_app, name="control", help="The control plane service.")


def _router() -> None:
    from router.cli import router_app

    app.add_typer(router_app, name="router", help="The SLO-aware data plane.")


def _simulate() -> None:
    # The benchmark harness imports every package: it is mounted here only, and the
    # product runs without it.
    try:
        from bench.cli import mount_top
    except ImportError:
        return
    mount_top(app)


def _demo() -> None:
    from deploy.demo import demo

    app.command("demo", help="The main job on the embedded default: export, serve, infer.")(demo)


def _bench() -> None:
    try:
        from bench.cli import mount
    except ImportError:
        return
    mount(bench_app)
    app.add_typer(bench_app, name="bench")


# Each top-level command and what mounts it, in `tnx --help`'s order. A run mounts only
# the command it names: importing them all (httpx, the fleet, the harness) took about a
# second before any command ran.
MOUNTS = {
    "export": _export,
    "repo": _repo,
    "prefix": _prefix,
    "fleet": _fleet,
    "profile": _profile,
    "plan": _plan,
    "control": _control,
    "router": _router,
    "simulate": _simulate,
    "demo": _demo,
    "bench": _bench,
}


@app.callback()
def _tnx() -> None:
    # A callback keeps `tnx` a group when one command alone is mounted (Typer would
    # otherwise run that command as the app itself).
    pass


_MOUNTED: set[str] = set()


def _mount(argv: list[str] | None = None) -> None:
    """Mount the command `argv` names, or every command (no argv, help, a typo)."""
    name = next((a for a in argv or () if not a.startswith("-")), None)
    for key in [name] if name in MOUNTS else list(MOUNTS):
        if key not in _MOUNTED:
            _MOUNTED.add(key)
            MOUNTS[key]()


def main() -> None:
    try:
        _mount(sys.argv[1:])  # imports the command's modules: errors there get one line too
        rc = app(standalone_mode=False)
    except TnxError as err:
        typer.echo(f"tnx: error: {err}", err=True)
        sys.exit(1)
    except typer.Abort:
        typer.echo("tnx: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        # By class name: Typer may raise its vendored click's classes, not click's own.
        kinds = {c.__name__ for c in type(err).__mro__}
        if "ClickException" in kinds:
            err.show()  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        if "Exit" in kinds:
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        raise
    # Without standalone mode click returns typer.Exit's code instead of exiting.
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
