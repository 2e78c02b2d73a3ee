"""The bench package's commands, mounted under `tnx bench` by the CLI root (deploy/cli.py)."""

from __future__ import annotations

from pathlib import Path

import typer


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

    bench_app.command("plan", help="Scheduler benchmark on the H200 profiles.")(bench_plan)
    bench_app.command(
        "scale", help="Planning time, GPUs and re-plan moves, 1,000 to 20,000 sessions."
    )(bench_scale)
    bench_app.command(
        "router", help="Router vs Triton direct under k6 load: latency, goodput, recovery."
    )(bench_router)
    bench_app.command(
        "chaos", help="Server, router and control-plane faults under k6 load (RELIABILITY.md)."
    )(bench_chaos)
    bench_app.command(
        "scaleout", help="1-3 routers and --workers 2 on one fleet under k6 load (issue 10)."
    )(bench_scaleout)
    bench_app.command(
        "queries", help="A two-stage query through POST /v1/queries vs its stages by a client."
    )(bench_queries)
    bench_app.command(
        "prefix", help="Shared-backbone examples at saturation, whole vs prefix-shared."
    )(bench_prefix)
    bench_app.command("tools", help="Install perf_analyzer for `tnx bench router`.")(tools)
    bench_app.command(
        "simulate", help="Policies x loads x traces in the simulator (BENCHMARKS.md)."
    )(bench_simulate)


def mount_top(app: typer.Typer) -> None:
    """The harness's top-level commands (`tnx simulate`)."""
    from bench.simulate import simulate_cmd

    app.command("simulate", help="A batching policy over a plan and a trace, simulated.")(
        simulate_cmd
    )
