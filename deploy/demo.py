"""`tnx demo` (make demo): the end-to-end job on the embedded default, in a few minutes.

1. export the example models (verified against torch) and build a repository;
2. start a local fleet of 3 real tritonserver processes and check each answers like torch;
3. profile every model on a live server (`tnx profile`);
4. start the control plane and a router that follows it;
5. drive open-loop traffic through the router, tripling one session's rate halfway,
   which forces a re-plan onto more servers;
6. print a per-session table and the plan before and after the step, and write a PNG
   of offered load, goodput, drops and servers used over time.

Every process it starts is stopped at the end, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from deploy.services import Service

# Demo shapes: the classifier at 224×224 costs a server's CPU ~15 ms a sample, so
# one server carries the first rate but not the tripled one (on a GPU, batching
# would make it cheap; on these CPU servers it stays near-linear in the batch).
SHAPES = {"backbone_classifier": (3, 224, 224), "backbone_embedder": (3, 64, 64), "tiny_mlp": (64,)}
TOKEN = "demo-admin-token"


@dataclass(slots=True)
class DemoSession:
    id: str
    model: str
    slo_ms: float
    rate: float
    step: float = 1.0  # rate multiplier from half time on


SESSIONS = [
    # classify's rate is set from its measured profile (see _stepped_rate).
    DemoSession("classify", "backbone_classifier", 300.0, 0.0, step=3.0),
    DemoSession("embed", "backbone_embedder", 250.0, 10.0),
    DemoSession("score", "tiny_mlp", 100.0, 40.0),
]


def _body(shape: tuple[int, ...]) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 binary request with one sample, as tritonclient.http sends it."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    raw = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    return header.encode() + raw, {
        "Inference-Header-Content-Length": str(len(header.encode())),
        "Content-Type": "application/octet-stream",
    }


def _export(out: Path, console) -> tuple[Path, dict]:
    from exporters.examples import EXAMPLES
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx
    from exporters.verify import verify_onnx
    from model_repo_tools.repository import add_model

    repo, modules = out / "repo", {}
    for name, factory in EXAMPLES.items():
        if name not in SHAPES:
            continue
        with console.status(f"exporting {name}"):
            model = modules[name] = load_factory(factory)
            onnx = export_onnx(model, SHAPES[name], out / "models" / f"{name}.onnx")
            checks = verify_onnx(model, onnx, SHAPES[name], (1, 7))
            add_model(onnx, repo, backend="python", max_batch=32)
        worst = max(c.max_abs for c in checks)
        console.print(
            f"exported {name} {SHAPES[name]} → {onnx} (onnxruntime vs torch: max abs {worst:.1e})"
        )
    return repo, modules


def _check_servers(fleet, modules, console) -> None:
    import numpy as np
    import torch
    from rich.table import Table

    from model_repo_tools.triton_client import TritonServer

    table = Table(title="Each server answers like torch")
    for col in ("model", "server", "batch", "max |triton − torch|"):
        table.add_column(col)
    rng = np.random.default_rng(0)
    for gpu in fleet.gpus:
        with TritonServer(gpu.server) as server:
            for name, model in modules.items():
                server.load(name)
                x = rng.standard_normal((4, *SHAPES[name]), dtype=np.float32)
                y = server.infer(name, {"input": x})["output"]
                with torch.no_grad():
                    err = float(np.abs(y - model(torch.from_numpy(x)).numpy()).max())
                table.add_row(name, gpu.id, "4", f"{err:.1e}")
                server.unload(name)
    console.print(table)


def _stepped_rate(profile, session: DemoSession, share: float = 0.4) -> float:
    """A rate that one server carries, and whose `step`-fold one server does not.

    One server's capacity for the session is its best throughput at a batch that
    runs within half the SLO (Nexus's saturated batch); the session starts at
    `share` of it, so the step takes it to share × step (1.2) servers' worth."""
    from model_repo_tools.profiles import LatencyCurve

    curve = LatencyCurve.from_profile(profile)
    capacity = max(
        1000.0 * b / curve.latency(b)
        for b in range(1, curve.max_batch + 1)
        if 2 * curve.latency(b) <= session.slo_ms
    )
    return round(share * capacity, 1)


def _plan_table(title: str, plan: dict):
    from rich.table import Table

    table = Table(title=title)
    for col in ("gpu", "duty ms", "session", "model", "batch", "rate"):
        table.add_column(col)
    for g in plan.get("gpus", []):
        for a in g["allocations"]:
            table.add_row(
                g["gpu"],
                f"{g['duty_cycle_ms']:.1f}",
                a["session"],
                a["model"],
                str(a["batch"]),
                f"{a['rate']:.1f}",
            )
    for u in plan.get("unplaced", []):
        table.add_row("-", "-", u["session"], "unplaced", "-", f"{u['rate']:.1f} ({u['reason']})")
    return table


def _session_table(records, duration_s: float):
    import numpy as np
    from rich.table import Table

    table = Table(title=f"Sessions over {duration_s:.0f} s through the router")
    for col in (
        "session",
        "offered",
        "req/s",
        "in SLO",
        "late",
        "dropped",
        "errors",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(col, justify="left" if col == "session" else "right")
    for name in sorted({r.stream for r in records}):
        rs = [r for r in records if r.stream == name]
        ok = [r for r in rs if r.status == 200]
        lat = np.array([r.latency_ms for r in ok]) if ok else np.array([np.nan])
        table.add_row(
            name,
            str(len(rs)),
            f"{len(rs) / duration_s:.1f}",
            str(sum(r.in_slo for r in rs)),
            str(sum(not r.in_slo for r in ok)),
            str(sum(r.status == 503 for r in rs)),
            str(sum(r.status not in (200, 503) for r in rs)),
            f"{np.percentile(lat, 50):.0f}",
            f"{np.percentile(lat, 99):.0f}",
        )
    return table


def _plot(
    records, servers: list[tuple[float, int]], step_at: float, duration_s: float, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    edges = np.arange(0, duration_s + 1, 1.0)
    t_due = np.array([r.due for r in records])
    t_done = np.array([r.done for r in records])
    good = np.array([r.in_slo for r in records])
    dropped = np.array([r.status == 503 for r in records])
    offered = np.histogram(t_due, edges)[0]
    goodput = np.histogram(t_done[good], edges)[0]
    drops = np.histogram(t_done[dropped], edges)[0]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(edges[:-1], offered, label="offered (req/s)", color="tab:gray")
    ax.plot(edges[:-1], goodput, label="goodput: answered within SLO (req/s)", color="tab:green")
    ax.plot(edges[:-1], drops, label="dropped early, 503 (req/s)", color="tab:red")
    ax.axvline(step_at, color="black", linestyle=":", label="rate step")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests per second")
    ax2 = ax.twinx()
    if servers:
        ts, ns = zip(*servers, strict=True)
        ax2.step(ts, ns, where="post", color="tab:blue", label="servers used by the plan")
    ax2.set_ylabel("servers used")
    ax2.set_ylim(0, 4)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("tnx demo: a 3× rate step re-plans onto more servers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def _run_traffic(streams, duration_s: float, control: str, step_at: float):
    import httpx

    from deploy.traffic import drive

    servers: list[tuple[float, int]] = []
    plans: dict[str, dict] = {}
    start = time.monotonic()

    async def watch() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    plan = (await client.get(f"{control}/v1/plan")).json()
                    t = time.monotonic() - start
                    servers.append((t, len(plan["gpus"])))
                    plans["after" if t > step_at else "before"] = plan
                await asyncio.sleep(1.0)

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        records = await drive(streams, duration_s, seed=1)
    finally:
        watcher.cancel()
    return records, servers, plans


def spawn_router(control_url: str, port: int, log: Path) -> Service:
    """A router following the control plane at `control_url`, on `port`, once it is ready."""
    from deploy.services import spawn

    return spawn(
        "router", ["router", "serve", "--control", control_url], port, "/v2/health/ready", log
    )


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Working folder."),
    servers: int = typer.Option(3, "--servers"),
    duration: float = typer.Option(60.0, "--duration", help="Seconds of traffic."),
    epoch: float = typer.Option(10.0, "--epoch", help="Control epoch in seconds."),
) -> None:
    """Export, serve, profile, plan, route and re-plan under a rate step, end to end."""
    from rich.console import Console

    from deploy.fleet import free_port, start_fleet, stop_fleet
    from deploy.services import spawn
    from deploy.traffic import Stream
    from model_repo_tools.profiler import ProfileSettings, measure_fleet
    from model_repo_tools.profiles import ProfileSet

    console = Console()
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    repo, modules = _export(out, console)
    with console.status(f"starting {servers} tritonserver processes"):
        fleet = start_fleet(servers, repo, out / "fleet")
    fleet.save(out / "fleet.json")
    started = []
    try:
        _check_servers(fleet, modules, console)
        with console.status("profiling") as status:
            runs = measure_fleet(
                fleet.gpus,
                list(modules),
                ProfileSettings(batches=(1, 2, 4, 8, 16, 32), runs=10),
                progress=lambda m: status.update(f"profiling {m}"),
            )
            profiles = [run.profile for run in runs]
        ProfileSet(profiles=profiles).save(out / "profiles.json")
        for p in profiles:
            pts = ", ".join(f"b{q.batch}={q.latency_ms:.1f}" for q in p.batches)
            console.print(f"profile {p.model} ({p.gpu_type}): {pts} ms")
        classify = SESSIONS[0]
        classify.rate = _stepped_rate(
            next(p for p in profiles if p.model == classify.model), classify
        )
        workload = {
            "sessions": [
                {"id": s.id, "model": s.model, "slo_ms": s.slo_ms, "rate": s.rate} for s in SESSIONS
            ]
        }
        (out / "workload.json").write_text(json.dumps(workload, indent=1))
        state = out / "control.sqlite"
        state.unlink(missing_ok=True)
        router_port, control_port = free_port(), free_port()
        router_url = f"http://127.0.0.1:{router_port}"
        with console.status("starting the control plane and the router"):
            control = spawn(
                "control plane",
                [
                    "control",
                    "serve",
                    "--fleet",
                    str(out / "fleet.json"),
                    "--repo",
                    str(repo),
                    "--profiles",
                    str(out / "profiles.json"),
                    "--workload",
                    str(out / "workload.json"),
                    "--router",
                    router_url,
                    "--epoch-s",
                    str(epoch),
                    "--state",
                    str(state),
                ],
                control_port,
                "/healthz",
                out / "control.log",
                env={"TNX_ADMIN_TOKEN": TOKEN},
            )
            started.append(control)
            router = spawn_router(control.url, router_port, out / "router.log")
            started.append(router)
        console.print(f"control plane {control.url}, router {router.url}")
        step_at = duration / 2
        streams = []
        for s in SESSIONS:
            body, headers = _body(SHAPES[s.model])
            phases = [(0.0, s.rate)] + ([(step_at, s.rate * s.step)] if s.step != 1 else [])
            streams.append(
                Stream(
                    s.id, f"{router.url}/v2/models/{s.model}/infer", body, phases, s.slo_ms, headers
                )
            )
        console.print(
            f"traffic for {duration:.0f} s; classify steps {SESSIONS[0].rate:g} → "
            f"{SESSIONS[0].rate * SESSIONS[0].step:g} req/s at {step_at:.0f} s"
        )
        with console.status("driving traffic through the router"):
            records, used, plans = asyncio.run(
                _run_traffic(streams, duration, control.url, step_at)
            )
    finally:
        with console.status("stopping the router, the control plane and the fleet"):
            for svc in reversed(started):
                svc.stop()
            stop_fleet(fleet, grace_s=5)
    console.print(
        _plan_table(f"Plan before the step (t < {step_at:.0f} s)", plans.get("before", {}))
    )
    console.print(_plan_table("Plan after the step", plans.get("after", {})))
    console.print(_session_table(records, duration))
    png = out / "demo.png"
    _plot(records, used, step_at, duration, png)
    answered = sum(r.status in (200, 503) for r in records)
    console.print(
        f"{len(records)} requests sent, {answered} answered 200 or 503, "
        f"{len(records) - answered} other; plot: {png}; "
        f"total {time.monotonic() - t0:.0f} s"
    )
