"""The bench package's commands, mounted under `tnx bench` by the CLI root (deploy/cli.py)."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = {
    "plan": "Scheduler benchmark on the H200 profiles.",
    "scale": "Planning time, GPUs and re-plan moves, 1,000 to 20,000 sessions.",
    "router": "Router vs Triton direct under k6 load: latency, goodput, recovery.",
    "chaos": "Server, router and control-plane faults under k6 load (RELIABILITY.md).",
    "scaleout": "1-3 routers and --workers 2 on one fleet under k6 load (issue 10).",
    "queries": "A two-stage query through POST /v1/queries vs its stages by a client.",
    "prefix": "Shared-backbone examples at saturation, whole vs prefix-shared.",
    "tools": "Install perf_analyzer for `tnx bench router`.",
    "simulate": "Policies x loads x traces in the simulator (BENCHMARKS.md).",
}


def tools(
    cache: Path = typer.Option(
        None, "--cache", help="Install folder (default $TNX_TOOLS_DIR or ~/.cache/tnx/tools)."
    ),
) -> None:
    """Install NVIDIA's perf_analyzer (from the tritonclient 2.45.0 wheel) and its libraries."""
    from bench.tools import install_perf_analyzer

    install_perf_analyzer(cache, log=typer.echo)


def mount(bench_app: typer.Typer) -> None:
    from bench.chaos import bench_chaos
    from bench.plan import bench_plan
    from bench.prefix_serving import bench_prefix
    from bench.queries import bench_queries
    from bench.router import bench_router
    from bench.scale import bench_scale
    from bench.scaleout import bench_scaleout
    from bench.simulate import bench_simulate

    commands = {
        "plan": bench_plan,
        "scale": bench_scale,
        "router": bench_router,
        "chaos": bench_chaos,
        "scaleout": bench_scaleout,
        "queries": bench_queries,
        "prefix": bench_prefix,
        "tools": tools,
        "simulate": bench_simulate,
    }
    for name, command in commands.items():
        bench_app.command(name, help=HELP[name])(command)


def mount_top(app: typer.Typer) -> None:
    """The harness's top-level commands (`tnx simulate`)."""
    from bench.simulate import simulate_cmd

    app.command("simulate", help="A batching policy over a plan and a trace, simulated.")(
        simulate_cmd
    )
