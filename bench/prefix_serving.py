"""`tnx bench prefix`: throughput at saturation with and without prefix sharing (issue 11).

The repository's shared-backbone examples (`backbone_classifier`, `backbone_embedder`) go
into one repository twice: whole (`whole_<name>`, two models each running the backbone)
and split by `--share-prefix` (the backbone once, a suffix each, ensembles under the
original names). One fleet serves both; each configuration in turn gets its plan (one
session per model on every server, the same batch), its models loaded by the actuator,
its own `tnx router serve`, and the same open-loop client (k6, `bench.open_loop`): `rate`
requests per second, above what the servers hold, half to each model, binary tensors,
for `seconds` after a 3-s warm-up. Rounds alternate the two, so a noisy stretch of a
shared machine falls on both. Reported: answers per second (the throughput at saturation),
answers within the SLO, 503s, latency percentiles, and Triton's execution counts.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import typer

from bench.open_loop import Body, Counts, LoadSpec, Phase, run_load
from control.types import Plan
from model_repo_tools.fleet import Fleet

HEADS = ("backbone_classifier", "backbone_embedder")
SHAPE = (3, 32, 32)
# About what one CPU server answers for the two heads (500–700 answers/s here, BENCHMARKS.md
# "Prefix sharing"), so both configurations run at saturation; a loose SLO so that what is
# measured is throughput, not drops.
RATE = 600.0
SLO_MS = 500.0
BATCH = 32  # planned per session: the prefix batch holds up to 2 x 32 samples


@dataclass(slots=True)
class Run:
    config: str
    counts: Counts
    seconds: float
    executions: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.counts.ok / self.seconds

    @property
    def goodput(self) -> float:
        return self.counts.in_slo / self.seconds


def _body(path: Path) -> Body:
    import numpy as np

    from bench.router_setup import binary_request

    x = np.random.default_rng(0).standard_normal((1, *SHAPE), dtype=np.float32)
    body, json_size = binary_request(x)
    path.write_bytes(body)
    return Body(path, json_size)


def _plan(fleet: Fleet, models: tuple[str, str], batch: int, slo: float) -> Plan:
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


def _executions(fleet: Fleet, names: list[str]) -> dict[str, int]:
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
    rate: float = typer.Option(RATE, "--rate", help="Offered req/s (open loop, k6)."),
    slo: float = typer.Option(SLO_MS, "--slo", help="SLO of both sessions, ms."),
    rounds: int = typer.Option(2, "--rounds", help="Runs of each configuration, alternated."),
    batch: int = typer.Option(BATCH, "--batch", help="Planned batch of each session."),
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
        settings = ProfileSettings(batches=(1, 2, 4, 8, 16, 32, 64), budget_s=5.0)
        runs_ = list(measure_fleet(fleet.gpus[:1], names, settings))
        ProfileSet(profiles=[r.profile for r in runs_]).save(out / "profiles.json")
        configs = {"whole": whole, "prefix-shared": HEADS}
        results: list[Run] = []
        act = Actuator(fleet, repo)
        body = _body(out / "body.bin")
        phases = (Phase("warm", rate, 3), Phase("load", rate, int(seconds)))
        for k in range(rounds):
            for config, served in configs.items():
                plan = _plan(fleet, served, batch, slo)
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
                    targets = [f"{router.url}/v2/models/{m}/infer" for m in served]
                    before = _executions(fleet, names)
                    res = run_load(LoadSpec(targets, body, slo, phases), out, f"{config}-{k}")
                    after = _executions(fleet, names)
                    run = Run(config, res.phase("load"), seconds)
                    run.executions = {
                        m: after[m] - before[m] for m in names if after[m] > before[m]
                    }
                    results.append(run)
                    typer.echo(f"round {k + 1} {config}: {run.rate:.1f} answers/s", err=True)
                finally:
                    router.stop(5)
        typer.echo(
            f"offered {rate:g} req/s (half to each model) for {seconds:g} s, SLO {slo:g} ms, "
            f"planned batch {batch} per session, {servers} server(s)"
        )
        typer.echo(
            "| configuration | answers/s (each round) | median | in SLO/s | 503/s | p50 ms "
            "| p99 ms | Triton executions (last round, warm-up included) |"
        )
        typer.echo("|---|---|---|---|---|---|---|---|")
        for config in configs:
            mine = [r for r in results if r.config == config]
            last = mine[-1].counts
            execs = ", ".join(f"{m} {n}" for m, n in mine[-1].executions.items())
            typer.echo(
                f"| {config} | {', '.join(f'{r.rate:.1f}' for r in mine)} "
                f"| {statistics.median(r.rate for r in mine):.1f} "
                f"| {statistics.median(r.goodput for r in mine):.1f} "
                f"| {statistics.median(r.counts.s503 / r.seconds for r in mine):.1f} "
                f"| {last.p50_ms or 0:.1f} | {last.p99_ms or 0:.1f} | {execs} |"
            )
    finally:
        stop_fleet(fleet, grace_s=5)
