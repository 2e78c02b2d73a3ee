"""`tnx bench prefix`: throughput at saturation with and without prefix sharing (issue 11).

The repository's shared-backbone examples (`backbone_classifier`, `backbone_embedder`) go
into one repository twice: whole (`whole_<name>`, two models each running the backbone)
and split by `--share-prefix` (the backbone once, a suffix each, ensembles under the
original names). One fleet serves both; each configuration in turn gets its plan (one
session per model on every server, the same batch), its models loaded by the actuator,
its own `tnx router serve`, and the same closed-loop client: `concurrency` requests in
flight, half to each model, binary tensors, for `seconds`. Rounds alternate the two, so
a noisy stretch of a shared machine falls on both. Reported: answers per second, 503s,
latency percentiles, and Triton's execution counts of the backbone's models.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer

HEADS = ("backbone_classifier", "backbone_embedder")
SHAPE = (3, 32, 32)


@dataclass(slots=True)
class Run:
    config: str
    answered: int = 0
    refused: int = 0
    other: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    executions: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


def _body(x) -> tuple[bytes, dict[str, str]]:  # noqa: ANN001
    header = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    return head + x.tobytes(), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


async def _drive(url: str, models: tuple[str, str], seconds: float, concurrency: int, run: Run):
    import httpx
    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, *SHAPE), dtype=np.float32)
    body, headers = _body(x)
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def worker(i: int) -> None:
            model = models[i % 2]
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await c.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers)
                if r.status_code == 200:
                    run.answered += 1
                    run.latencies.append((time.perf_counter() - t0) * 1000)
                elif r.status_code == 503:
                    run.refused += 1
                else:
                    run.other += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        run.seconds = time.perf_counter() - t0


def _plan(fleet, models: tuple[str, str], batch: int, slo: float):  # noqa: ANN001, ANN202
    from control.types import Plan

    return Plan.model_validate(
        {
            "gpus": [
                {
                    "gpu": g.id,
                    "gpu_type": g.gpu_type,
                    "duty_cycle_ms": slo / 2,
                    "allocations": [
                        {"session": m, "model": m, "batch": batch, "rate": 1.0, "slo_ms": slo}
                        for m in models
                    ],
                }
                for g in fleet.gpus
            ]
        }
    )


def _executions(fleet, names: list[str]) -> dict[str, int]:  # noqa: ANN001
    from model_repo_tools.triton_client import TritonServer

    out = dict.fromkeys(names, 0)
    for g in fleet.gpus:
        with TritonServer(g.server) as s:
            ready = {m["name"] for m in s.repository_index() if m.get("state") == "READY"}
            for m in names:
                if m in ready:
                    (st,) = s.statistics(m)["model_stats"]
                    out[m] += int(st.get("execution_count", 0))
    return out


def bench_prefix(
    out: Path = typer.Option(Path("bench-out/prefix"), "--out", help="Working folder."),
    servers: int = typer.Option(1, "--servers", help="tritonserver processes."),
    seconds: float = typer.Option(20.0, "--seconds", help="Seconds of load per run."),
    concurrency: int = typer.Option(32, "--concurrency", help="Requests in flight."),
    rounds: int = typer.Option(2, "--rounds", help="Runs of each configuration, alternated."),
    batch: int = typer.Option(16, "--batch", help="Planned batch of each session."),
) -> None:
    """Throughput at saturation of the shared-backbone examples, whole vs prefix-shared."""
    from control.actuator import Actuator
    from deploy.fleet import free_port, start_fleet, stop_fleet
    from deploy.services import spawn
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx
    from model_repo_tools.profiler import ProfileSettings, measure_fleet
    from model_repo_tools.profiles import ProfileSet
    from model_repo_tools.repository import add_model
    from model_repo_tools.shared_prefix import add_shared, model_bytes

    out = out.resolve()
    models = out / "models"
    paths = []
    for h in HEADS:
        p = models / f"{h}.onnx"
        if not p.is_file():
            export_onnx(load_factory(f"exporters.examples:{h}"), SHAPE, p)
        paths.append(p)
    repo = out / "repo"
    stored = add_shared(paths, repo, max_batch=64)
    (prefix,) = stored.groups
    whole = tuple(f"whole_{h}" for h in HEADS)
    for h, p in zip(whole, paths, strict=True):
        add_model(p, repo, name=h, max_batch=64)
    split_bytes = model_bytes(repo, [prefix, *(f"{prefix}__{h}" for h in HEADS)])
    typer.echo(f"model bytes: whole {model_bytes(repo, whole)}, split {split_bytes}")
    fleet = start_fleet(servers, repo, out / "fleet")
    try:
        fleet.save(out / "fleet.json")
        parts = [prefix, *(f"{prefix}__{h}" for h in HEADS)]
        names = [*whole, *HEADS, *parts]
        settings = ProfileSettings(batches=(1, 2, 4, 8, 16, 32), budget_s=5.0)
        runs_ = list(measure_fleet(fleet.gpus[:1], names, settings))
        ProfileSet(profiles=[r.profile for r in runs_]).save(out / "profiles.json")
        configs = {"whole": whole, "prefix-shared": HEADS}
        results: list[Run] = []
        act = Actuator(fleet, repo)
        for k in range(rounds):
            for config, served in configs.items():
                plan = _plan(fleet, served, batch, 2000.0)
                plan.save(out / f"plan-{config}.json")
                act.apply(plan)
                port = free_port()
                args = ["router", "serve", "--plan", str(out / f"plan-{config}.json")]
                args += [
                    "--fleet",
                    str(out / "fleet.json"),
                    "--profiles",
                    str(out / "profiles.json"),
                ]
                router = spawn("router", args, port, "/v2/health/ready", out / f"router-{k}.log")
                try:
                    run = Run(config)
                    asyncio.run(_drive(router.url, served, 3.0, concurrency, Run(config)))  # warm
                    before = _executions(fleet, names)
                    asyncio.run(_drive(router.url, served, seconds, concurrency, run))
                    after = _executions(fleet, names)
                    run.executions = {
                        m: after[m] - before[m] for m in names if after[m] > before[m]
                    }
                    results.append(run)
                    typer.echo(f"round {k + 1} {config}: {run.rate:.1f} answers/s", err=True)
                finally:
                    router.stop(5)
        typer.echo(
            f"| configuration | answers/s (rounds) | median | 503/s | p50 ms | p99 ms "
            f"| Triton executions ({seconds:g} s) |"
        )
        typer.echo("|---|---|---|---|---|---|---|")
        for config in configs:
            mine = [r for r in results if r.config == config]
            lat = sorted(x for r in mine for x in r.latencies)
            execs = ", ".join(f"{m} {n}" for m, n in mine[-1].executions.items())
            typer.echo(
                f"| {config} | {', '.join(f'{r.rate:.1f}' for r in mine)} "
                f"| {statistics.median(r.rate for r in mine):.1f} "
                f"| {sum(r.refused for r in mine) / sum(r.seconds for r in mine):.1f} "
                f"| {lat[len(lat) // 2]:.1f} | {lat[int(len(lat) * 0.99)]:.1f} | {execs} |"
            )
    finally:
        stop_fleet(fleet, grace_s=5)
