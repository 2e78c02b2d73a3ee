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


def _mount() -> None:
    # Sub-apps register here; each import is cheap (heavy libraries load inside commands).
    from deploy.cli_fleet import fleet_app
    from exporters.cli import export
    from exporters.prefix_cli import prefix_app
    from model_repo_tools.cli import profile, repo_app

    app.command("export", help="Export a torch module to ONNX (and TensorRT), verified.")(export)
    app.add_typer(repo_app, name="repo", help="Triton model repositories.")
    app.add_typer(prefix_app, name="prefix", help="Shared prefixes of ONNX models (Nexus).")
    app.add_typer(fleet_app, name="fleet", help="A local fleet of real tritonserver processes.")
    app.command("profile", help="Profile models' batch latency and memory on a live server.")(
        profile
    )
    # --- scheduler (control/cli.py) ---
    try:
        from control.cli import plan
    except ImportError:  # the scheduler's CLI is not there yet
        pass
    else:
        app.command("plan", help="Plan sessions onto GPUs (Nexus squishy bin packing).")(plan)
    from control.serve_cli import control_app

    app.add_typer(control_app, name="control", help="The control plane service.")
    # --- router (router/cli.py) ---
    try:
        from router.cli import router_app
    except ImportError:
        pass
    else:
        app.add_typer(router_app, name="router", help="The SLO-aware data plane.")
    # --- the benchmark harness (bench/cli.py): it imports every package, so it is mounted
    # here only, lazily, and the product runs without it ---
    try:
        from bench.cli import mount as mount_bench
        from bench.cli import mount_top
    except ImportError:
        pass
    else:
        mount_bench(bench_app)
        mount_top(app)
    from deploy.demo import demo

    app.command("demo", help="The main job on the embedded default: export, serve, infer.")(demo)
    app.add_typer(bench_app, name="bench")


def main() -> None:
    _mount()
    try:
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
