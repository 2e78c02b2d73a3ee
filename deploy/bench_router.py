"""`tnx bench router`: the router's goodput under open-loop Poisson load on a local Triton fleet.

Issue 4, item 5. On 2 real `tritonserver` processes serving `convnet64` (a CPU-heavy
example model): measure l(b) on the servers, plan one session (batch b, duty cycle
headroom·l(b) per server, SLO = slo_factor·l(b)), then offer 0.5×, 1×, 1.5× and 2× the
planned capacity C to each system in turn, on the same servers:

- `early`, `lazy`, `none`: `tnx router serve --drop …` (sliding-window early drop, drop
  only the expired, never drop);
- `triton`: requests straight to Triton's dynamic batcher, round robin over the servers,
  with the model reloaded with `max_queue_delay_microseconds`, `preferred_batch_size` and a
  `default_queue_policy` that rejects after the SLO.

Latencies are the client's (send to last byte). Goodput counts 200s within the SLO.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import typer

from deploy.loadgen import LoadResult, LoadSpec, run_load
from deploy.services import Service, spawn
from exporters.errors import TnxError, UserInputError

SYSTEMS = ("early", "lazy", "none", "triton")
MODEL = "convnet64"


@dataclass(slots=True)
class BenchConfig:
    out: Path
    model: str = MODEL
    loads: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    systems: tuple[str, ...] = SYSTEMS
    duration_s: float = 15.0
    batch: int = 8
    slo_factor: float = 5.0
    headroom: float = 1.5
    seed: int = 0
    servers: int = 2


@dataclass(slots=True)
class Row:
    system: str
    load: float
    offered_rps: float
    sent: int
    ok: int
    in_slo: int
    late: int
    dropped: int
    other: int
    goodput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    router_cpu_ms_per_req: float | None
    loadgen_cpu_ms_per_req: float
    lag_p99_ms: float
    router_late: int | None = None  # the router's own count (its clock, from arrival)
    mean_batch: float | None = None  # samples per batch the servers ran
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Setup:
    latency_ms: dict[int, float]
    slo_ms: float
    duty_cycle_ms: float
    capacity_rps: float
    triton_delay_us: int
    triton_max_queue: int


# ---- model, repository, fleet -------------------------------------------------------------


def prepare_repo(cfg: BenchConfig) -> tuple[Path, Path]:
    from exporters.examples import EXAMPLES, INPUT_SHAPES
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx
    from model_repo_tools.repository import add_model

    if cfg.model not in EXAMPLES:
        raise UserInputError(f"--model {cfg.model!r}: not one of {', '.join(EXAMPLES)}")
    onnx = export_onnx(
        load_factory(EXAMPLES[cfg.model]),
        INPUT_SHAPES[cfg.model],
        cfg.out / "models" / f"{cfg.model}.onnx",
    )
    repo = cfg.out / "repo"
    add_model(onnx, repo, backend="python", max_batch=64)
    return repo, onnx


def add_model_copy(onnx: Path, repo: Path, name: str) -> None:
    from model_repo_tools.repository import add_model

    add_model(onnx, repo, backend="python", max_batch=64, name=name)


def request_body(model: str) -> tuple[bytes, dict[str, str]]:
    """One sample as tritonclient.http sends it: binary input, binary output requested."""
    import tritonclient.http as httpclient

    from exporters.examples import INPUT_SHAPES

    x = np.random.default_rng(0).standard_normal((1, *INPUT_SHAPES[model]), dtype=np.float32)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = httpclient.InferRequestedOutput("output", binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([inp], [out])
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return body, headers


def measure_latency(fleet, model: str, batches: list[int], reps: int = 7) -> dict[int, float]:
    """Median batch latency (gRPC round trip), all servers at once: on this machine they share
    the cores, so a server's batch time alone would overstate what the fleet can do."""
    from exporters.examples import INPUT_SHAPES
    from model_repo_tools.triton_client import TritonServer

    times: dict[int, list[float]] = {b: [] for b in batches}
    lock = threading.Lock()

    def run(address: str) -> None:
        rng = np.random.default_rng(1)
        with TritonServer(address) as s:
            for b in batches:
                x = rng.standard_normal((b, *INPUT_SHAPES[model]), dtype=np.float32)
                s.infer(model, {"input": x})  # warm-up
                for _ in range(reps):
                    t0 = time.perf_counter()
                    s.infer(model, {"input": x})
                    with lock:
                        times[b].append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=run, args=(g.server,)) for g in fleet.gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {b: statistics.median(v) for b, v in times.items()}


def write_contracts(cfg: BenchConfig, fleet, lat: dict[int, float]) -> Setup:
    lb = lat[cfg.batch]
    slo = cfg.slo_factor * lb
    duty = cfg.headroom * lb
    per_gpu = 1000.0 * cfg.batch / duty
    gpu_type = fleet.gpus[0].gpu_type
    profiles = {
        "version": 1,
        "profiles": [
            {
                "model": cfg.model,
                "gpu_type": gpu_type,
                "batches": [{"batch": b, "latency_ms": round(ms, 3)} for b, ms in lat.items()],
            }
        ],
    }
    plan = {
        "version": 1,
        "gpus": [
            {
                "gpu": g.id,
                "gpu_type": g.gpu_type,
                "duty_cycle_ms": round(duty, 3),
                "allocations": [
                    {
                        "session": cfg.model,
                        "model": cfg.model,
                        "batch": cfg.batch,
                        "rate": round(per_gpu, 3),
                        "slo_ms": round(slo, 3),
                    }
                ],
            }
            for g in fleet.gpus
        ],
        "unplaced": [],
    }
    (cfg.out / "profiles.json").write_text(json.dumps(profiles, indent=1))
    (cfg.out / "plan.json").write_text(json.dumps(plan, indent=1))
    fleet.save(cfg.out / "fleet.json")
    return Setup(
        latency_ms=lat,
        slo_ms=slo,
        duty_cycle_ms=duty,
        capacity_rps=per_gpu * len(fleet.gpus),
        # Wait at most half a batch time to fill a batch; reject a request that a full
        # SLO's worth of planned work is already queued ahead of.
        triton_delay_us=int(lb * 500),
        triton_max_queue=math.ceil(per_gpu * slo / 1000.0),
    )


def triton_override(repo: Path, model: str, batch: int, setup: Setup) -> str:
    from model_repo_tools.config import parse_pbtxt, to_override_json

    cfg = parse_pbtxt(repo / model / "config.pbtxt")
    cfg.max_batch_size = batch
    db = cfg.dynamic_batching
    db.max_queue_delay_microseconds = setup.triton_delay_us
    db.preferred_batch_size[:] = [batch]
    qp = db.default_queue_policy
    qp.timeout_action = qp.REJECT
    qp.default_timeout_microseconds = int(setup.slo_ms * 1000)
    qp.allow_timeout_override = True
    qp.max_queue_size = setup.triton_max_queue
    return to_override_json(cfg)


# ---- router process -----------------------------------------------------------------------


def start_router(cfg: BenchConfig, drop: str) -> Service:
    from deploy.fleet import free_port

    args = [
        "router",
        "serve",
        "--plan",
        str(cfg.out / "plan.json"),
        "--fleet",
        str(cfg.out / "fleet.json"),
        "--profiles",
        str(cfg.out / "profiles.json"),
        "--drop",
        drop,
    ]
    return spawn(
        f"router --drop {drop}",
        args,
        free_port(),
        "/v2/health/ready",
        cfg.out / f"router-{drop}.log",
    )


def stop_router(router: Service) -> None:
    router.stop(15)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def router_counter(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


# ---- one load, one system -----------------------------------------------------------------


def summarize(
    system: str, load: float, res: LoadResult, slo_ms: float, router_cpu_s: float | None
) -> Row:
    status = np.asarray(res.status)
    lat_ms = np.asarray(res.latency_s) * 1000.0
    ok = status == 200
    ok_lat = lat_ms[ok]
    in_slo = int((ok_lat <= slo_ms).sum())
    sent = res.sent
    other = int(((status != 200) & (status != 503)).sum())
    per_req = 1000.0 / max(sent, 1)
    return Row(
        system=system,
        load=load,
        offered_rps=sent / res.duration_s,
        sent=sent,
        ok=int(ok.sum()),
        in_slo=in_slo,
        late=int(ok.sum()) - in_slo,
        dropped=int((status == 503).sum()),
        other=other,
        goodput_rps=in_slo / res.duration_s,
        p50_ms=float(np.percentile(ok_lat, 50)) if ok_lat.size else None,
        p99_ms=float(np.percentile(ok_lat, 99)) if ok_lat.size else None,
        router_cpu_ms_per_req=None if router_cpu_s is None else router_cpu_s * per_req,
        loadgen_cpu_ms_per_req=res.cpu_s * per_req,
        lag_p99_ms=float(np.percentile(res.lag_s, 99) * 1000) if sent else 0.0,
        errors=dict(res.errors),
    )


def run_one(
    cfg: BenchConfig,
    system: str,
    index: int,
    targets: list[str],
    setup: Setup,
    body_file: Path,
    headers: dict[str, str],
    router: Service | None,
    batch_counts: Callable[[], tuple[float, float]],
) -> Row:
    """One load level against one system; `batch_counts()` is (samples, batches) so far."""
    load = cfg.loads[index]
    spec = LoadSpec(
        targets=targets,
        body_file=str(body_file),
        headers=headers,
        rate=load * setup.capacity_rps,
        duration_s=cfg.duration_s,
        seed=cfg.seed + index,  # every system sees the same arrivals at a given load
        timeout_s=max(60.0, 4 * cfg.duration_s),
    )
    cpu0 = late0 = 0.0
    if router is not None:
        cpu0 = cpu_seconds(router.proc.pid)
        late0 = router_counter(router.url, "tnx_router_answered_late_total")
    samples0, batches0 = batch_counts()
    res = run_load(spec, cfg.out / "load")
    cpu = None if router is None else cpu_seconds(router.proc.pid) - cpu0
    row = summarize(system, load, res, setup.slo_ms, cpu)
    samples, batches = batch_counts()
    if batches > batches0:
        row.mean_batch = (samples - samples0) / (batches - batches0)
    if router is not None:
        late = router_counter(router.url, "tnx_router_answered_late_total") - late0
        row.router_late = int(late)
    if row.ok + row.dropped + row.other != row.sent:
        raise TnxError(f"{system} at {load}×: answers do not add up to requests sent")
    return row


def router_batches(router: Service) -> tuple[float, float]:
    return (
        router_counter(router.url, "tnx_router_batch_size_sum"),
        router_counter(router.url, "tnx_router_batch_size_count"),
    )


def triton_batches(fleet, model: str) -> tuple[float, float]:
    from model_repo_tools.triton_client import TritonServer

    samples = batches = 0.0
    for g in fleet.gpus:
        with TritonServer(g.server) as s:
            for st in s.statistics(model).get("model_stats", []):
                samples += float(st.get("inference_count", 0))
                batches += float(st.get("execution_count", 0))
    return samples, batches


def warm_up(targets: list[str], body: bytes, headers: dict[str, str], n: int = 16) -> None:
    with httpx.Client(timeout=60) as c:
        for i in range(n):
            c.post(targets[i % len(targets)], content=body, headers=headers)


def run_bench(cfg: BenchConfig, log=print) -> tuple[Setup, list[Row]]:
    """Systems take turns at each load level (same arrivals, same seconds of the machine's
    life), so that a neighbour's burst on a shared machine does not land on one system only."""
    from deploy.fleet import start_fleet, stop_fleet
    from model_repo_tools.triton_client import TritonServer

    for s in cfg.systems:
        if s not in SYSTEMS:
            raise UserInputError(f"--systems: {s!r} is not one of {', '.join(SYSTEMS)}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    log(f"exporting {cfg.model} and building the repository under {cfg.out}")
    repo, onnx = prepare_repo(cfg)
    # Triton's batcher gets its own copy of the model, loaded with the batcher's config.
    batcher_model = f"{cfg.model}_dynbatch"
    add_model_copy(onnx, repo, batcher_model)
    body, headers = request_body(cfg.model)
    body_file = cfg.out / "request.bin"
    body_file.write_bytes(body)
    fleet = start_fleet(cfg.servers, repo, cfg.out / "fleet")
    routers: dict[str, Service] = {}
    rows: list[Row] = []
    try:
        for g in fleet.gpus:
            with TritonServer(g.server) as s:
                s.load(cfg.model)
        sizes = sorted({1, 2, 4, cfg.batch, 2 * cfg.batch})
        setup = write_contracts(cfg, fleet, measure_latency(fleet, cfg.model, sizes))
        log(
            f"l(b) ms: {', '.join(f'{b}: {ms:.1f}' for b, ms in setup.latency_ms.items())}; "
            f"plan: batch {cfg.batch}, duty cycle {setup.duty_cycle_ms:.1f} ms, "
            f"SLO {setup.slo_ms:.0f} ms, capacity C = {setup.capacity_rps:.1f} req/s"
        )
        targets: dict[str, list[str]] = {}
        for system in cfg.systems:
            if system == "triton":
                override = triton_override(repo, batcher_model, cfg.batch, setup)
                for g in fleet.gpus:
                    with TritonServer(g.server) as s:
                        s.load(batcher_model, override)
                targets[system] = [
                    f"http://{g.http}/v2/models/{batcher_model}/infer" for g in fleet.gpus
                ]
            else:
                routers[system] = start_router(cfg, system)
                targets[system] = [f"{routers[system].url}/v2/models/{cfg.model}/infer"]
            warm_up(targets[system], body, headers)
        for i in range(len(cfg.loads)):
            for system in cfg.systems:
                router = routers.get(system)
                counts = (
                    partial(router_batches, router)
                    if router is not None
                    else partial(triton_batches, fleet, batcher_model)
                )
                row = run_one(
                    cfg, system, i, targets[system], setup, body_file, headers, router, counts
                )
                rows.append(row)
                log(format_row(row))
                time.sleep(1.0)  # let the servers settle
    finally:
        for router in routers.values():
            stop_router(router)
        stop_fleet(fleet, grace_s=5)
    rows.sort(key=lambda r: (SYSTEMS.index(r.system), r.load))
    (cfg.out / "results.json").write_text(
        json.dumps(
            {
                "config": {k: str(v) for k, v in asdict(cfg).items()},
                "setup": asdict(setup),
                "rows": [asdict(r) for r in rows],
            },
            indent=1,
        )
    )
    return setup, rows


# ---- report -------------------------------------------------------------------------------

HEADER = (
    "| system | load | offered rps | goodput rps | 503 | late 200s | other | p50 ms | p99 ms "
    "| mean batch | router CPU ms/req |"
)


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def format_row(r: Row) -> str:
    drop_pct = 100.0 * r.dropped / max(r.sent, 1)
    late_pct = 100.0 * r.late / max(r.ok, 1)
    cpu = "—" if r.router_cpu_ms_per_req is None else f"{r.router_cpu_ms_per_req:.2f}"
    batch = "—" if r.mean_batch is None else f"{r.mean_batch:.1f}"
    return (
        f"| {r.system} | {r.load:g}× | {r.offered_rps:.1f} | {r.goodput_rps:.1f} "
        f"| {r.dropped} ({drop_pct:.1f}%) | {r.late} ({late_pct:.1f}%) | {r.other} "
        f"| {_ms(r.p50_ms)} | {_ms(r.p99_ms)} | {batch} | {cpu} |"
    )


def table(rows: list[Row]) -> list[str]:
    return [HEADER, "|" + "---|" * 11] + [format_row(r) for r in rows]


def target_lines(rows: list[Row]) -> list[str]:
    """The issue's targets, per router system."""
    out = []
    for system in sorted({r.system for r in rows}, key=SYSTEMS.index):
        rs = {r.load: r for r in rows if r.system == system}
        worst_late = max(100.0 * r.late / max(r.ok, 1) for r in rs.values())
        parts = [f"{system}: late ≤ {worst_late:.1f}% of 200s at any load"]
        if 0.5 in rs:
            parts.append(f"drops at 0.5× {100.0 * rs[0.5].dropped / max(rs[0.5].sent, 1):.1f}%")
        if 1.0 in rs and 2.0 in rs and rs[1.0].goodput_rps > 0:
            parts.append(f"goodput 2×/1× = {rs[2.0].goodput_rps / rs[1.0].goodput_rps:.2f}")
        out.append("; ".join(parts))
    return out


def plot(rows: list[Row], setup: Setup, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "early": "tnx router, early drop",
        "lazy": "tnx router, lazy drop",
        "none": "tnx router, no drop",
        "triton": "Triton dynamic batcher (round robin)",
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for system in sorted({r.system for r in rows}, key=SYSTEMS.index):
        rs = sorted((r for r in rows if r.system == system), key=lambda r: r.load)
        ax.plot(
            [r.offered_rps for r in rs], [r.goodput_rps for r in rs], "o-", label=labels[system]
        )
    top = max(r.offered_rps for r in rows)
    ax.plot([0, top], [0, top], ":", color="grey", label="goodput = offered")
    ax.axhline(setup.capacity_rps, ls="--", color="grey", lw=0.8, label="planned capacity C")
    ax.set_xlabel("offered load (req/s, Poisson)")
    ax.set_ylabel(f"goodput (answers within {setup.slo_ms:.0f} ms, req/s)")
    ax.set_title(title or "goodput against offered load", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def bench_router(
    out: Path = typer.Option(Path("bench-out/router"), "--out", help="Working folder."),
    duration: float = typer.Option(15.0, "--duration", help="Seconds of load per level."),
    loads: str = typer.Option("0.5,1,1.5,2", "--loads", help="Multiples of the planned capacity."),
    systems: str = typer.Option(",".join(SYSTEMS), "--systems", help="early,lazy,none,triton"),
    batch: int = typer.Option(8, "--batch", help="The plan's batch size."),
    slo_factor: float = typer.Option(5.0, "--slo-factor", help="SLO = factor × l(batch)."),
    headroom: float = typer.Option(1.5, "--headroom", help="Duty cycle = headroom × l(batch)."),
    seed: int = typer.Option(0, "--seed"),
    png: Path = typer.Option(None, "--png", help="Goodput plot (default OUT/goodput.png)."),
) -> None:
    """Goodput, drops, late answers, p50/p99 and router CPU per request under Poisson load."""
    try:
        levels = tuple(float(x) for x in loads.split(",") if x.strip())
    except ValueError:
        raise UserInputError(f"--loads: not a list of numbers: {loads!r}") from None
    if not levels or min(levels) <= 0:
        raise UserInputError(f"--loads: need positive multiples, got {loads!r}")
    cfg = BenchConfig(
        out=out,
        loads=levels,
        systems=tuple(s.strip() for s in systems.split(",") if s.strip()),
        duration_s=duration,
        batch=batch,
        slo_factor=slo_factor,
        headroom=headroom,
        seed=seed,
    )
    command = "tnx bench router " + " ".join(sys.argv[3:])
    setup, rows = run_bench(cfg, log=lambda line: typer.echo(line, err=True))
    title = f"{MODEL} on 2 Triton servers (CPU), plan batch {batch}, SLO {setup.slo_ms:.0f} ms"
    path = plot(rows, setup, png or out / "goodput.png", title)
    typer.echo(f"command: {command.strip()}")
    typer.echo(
        f"plan: batch {batch}, l({batch}) = {setup.latency_ms[batch]:.1f} ms, duty cycle "
        f"{setup.duty_cycle_ms:.1f} ms, SLO {setup.slo_ms:.0f} ms, C = {setup.capacity_rps:.1f} "
        f"req/s; Triton: max_queue_delay {setup.triton_delay_us} µs, max_queue_size "
        f"{setup.triton_max_queue}"
    )
    for line in table(rows):
        typer.echo(line)
    for line in target_lines(rows):
        typer.echo(line)
    typer.echo(f"plot: {path}")
