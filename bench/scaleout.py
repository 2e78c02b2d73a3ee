"""`tnx bench scaleout`: many routers in front of one fleet (issue 10), load from k6.

On 2 real `tritonserver` processes, a control plane plans two sessions of a cheap model
(`tiny_mlp` and a copy of it, `tiny_mlp_b`, 50 ms SLO) declared at 0.6 of a server each, so
each gets a server (and so a router) of its own; its rate window is longer than the run, so
nothing is re-planned under the load. Then, for 1, 2 and 3 routers (`tnx router serve
--control`) and for one router with `--workers 2`, k6 sends open-loop load round robin over
every router and both models (`bench.open_loop`), at rising rates. Per rate: requests in
SLO, 503s, other answers (must be 0), p50/p99, the share of requests a router forwarded to
the owner of their GPU, and the routers' CPU per request (user + system, psutil, over all
router processes). Beside that, with 2 routers: what a forward adds (p50/p99 of low-rate
load sent to the owner against sent to the other router), and how long a SIGKILLed
router's GPUs take to move to the survivor (its model answered 200 there again).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import typer

from bench.open_loop import Body, Counts, LoadSpec, Phase, run_load
from deploy.services import Service, spawn, wait_until
from tnx.cli_args import numbers

MODELS = ("tiny_mlp", "tiny_mlp_b")
SLO_MS = 50.0
IDLE_S = 5.0  # seconds of no load over which the routers' idle CPU is measured
# (name, router processes started, --workers of each)
SETUPS = (("1 router", 1, 1), ("2 routers", 2, 1), ("3 routers", 3, 1), ("--workers 2", 1, 2))


@dataclass(slots=True)
class Level:
    rate: float
    sent: int
    in_slo: float  # fractions of sent
    s503: float
    other: int
    p50_ms: float | None
    p99_ms: float | None
    forwarded: float  # share of sent that a router forwarded
    cpu_ms: float  # router CPU per request sent, all router processes together
    marginal_ms: float  # the same less what the routers burn idle (plan polls, timers)


@dataclass(slots=True)
class SetupResult:
    name: str
    routers: int  # registered router processes
    levels: list[Level] = field(default_factory=list)


@dataclass(slots=True)
class Results:
    command: str
    latency_ms: dict[int, float] = field(default_factory=dict)  # tiny_mlp l(b), measured
    setups: list[SetupResult] = field(default_factory=list)
    forward: dict[str, float] = field(default_factory=dict)  # p50/p99 direct and forwarded
    takeover_s: float | None = None


def level_of(rate: float, c: Counts, forwarded: int, cpu_s: float, idle_s: float = 0.0) -> Level:
    """One rate's figures from k6's counts, the routers' forwards, their CPU seconds, and
    of those what they would have burnt idle over the same time."""
    n = max(c.sent, 1)
    return Level(
        rate,
        c.sent,
        c.in_slo / n,
        c.s503 / n,
        c.other,
        c.p50_ms,
        c.p99_ms,
        forwarded / n,
        1000.0 * cpu_s / n,
        1000.0 * max(0.0, cpu_s - idle_s) / n,
    )


def capacity_rows(cpu_ms: float, cores: tuple[int, ...] = (1, 2, 4, 8, 16)) -> list[str]:
    """The sizing table: router cores → req/s at `cpu_ms` of router CPU per request."""
    rows = ["| router cores | req/s (from CPU per request) |", "|---|---|"]
    rows += [f"| {c} | {c * 1000.0 / cpu_ms:,.0f} |" for c in cores]
    return rows


def _setup(out: Path, log) -> tuple:
    from bench.router_setup import export_models, measure_latency, write_body
    from deploy.fleet import start_fleet
    from model_repo_tools.repository import add_model

    onnx = export_models(["tiny_mlp"], out)["tiny_mlp"]
    repo = out / "repo"
    for name in MODELS:
        if not (repo / name).is_dir():
            add_model(onnx, repo, backend="python", max_batch=64, name=name)
    body = write_body("tiny_mlp", out / "request.bin")
    fleet = start_fleet(2, repo, out / "fleet")
    fleet.save(out / "fleet.json")
    for g in fleet.gpus:
        from model_repo_tools.triton_client import TritonServer

        with TritonServer(g.server) as s:
            s.load("tiny_mlp")
    lat = measure_latency(fleet, "tiny_mlp", [1, 4, 8, 16, 32])
    log(f"tiny_mlp l(b) ms: {', '.join(f'{b}: {ms:.2f}' for b, ms in lat.items())}")
    gpu_type = fleet.gpus[0].gpu_type
    points = [{"batch": b, "latency_ms": round(ms, 3)} for b, ms in lat.items()]
    profiles = [{"model": m, "gpu_type": gpu_type, "batches": points} for m in MODELS]
    (out / "profiles.json").write_text(json.dumps({"version": 1, "profiles": profiles}))
    # 0.6 of a server each at the largest batch within the SLO: one server per session.
    b = max(b for b, ms in lat.items() if 2 * ms <= SLO_MS)
    rate = 0.6 * 1000.0 * b / lat[b]
    sessions = [{"id": m, "model": m, "slo_ms": SLO_MS, "rate": round(rate, 1)} for m in MODELS]
    (out / "workload.json").write_text(json.dumps({"sessions": sessions}))
    return fleet, repo, body, lat


def _control(out: Path, repo: Path) -> Service:
    from deploy.fleet import free_port

    state = out / "control.sqlite"
    state.unlink(missing_ok=True)
    args = ["control", "serve", "--fleet", str(out / "fleet.json"), "--repo", str(repo)]
    args += ["--profiles", str(out / "profiles.json"), "--workload", str(out / "workload.json")]
    args += ["--epoch-s", "3600", "--window-s", "3600", "--state", str(state)]
    return spawn("control", args, free_port(), "/healthz", out / "control.log")


def _routers(control: Service, out: Path, n: int, workers: int) -> list[Service]:
    from deploy.fleet import free_port

    started = []
    for _ in range(n):
        port = free_port()
        args = ["router", "serve", "--control", control.url]
        args += ["--workers", str(workers)] if workers > 1 else []
        started.append(spawn("router", args, port, "/v2/health/ready", out / f"router-{port}.log"))
    return started


def _registered(control: Service) -> dict[str, list[str]]:
    body = httpx.get(f"{control.url}/v1/routers", timeout=5).json()
    return {r["url"]: r["gpus"] for r in body["routers"]}


def _cpu_s(services: list[Service]) -> float:
    import psutil

    total = 0.0
    for s in services:
        try:
            p = psutil.Process(s.proc.pid)
            for q in (p, *p.children(recursive=True)):
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def _forwarded(urls: list[str]) -> int:
    return sum(httpx.get(f"{u}/v1/sessions", timeout=5).json()["forwarded"] for u in urls)


def _spec(urls: list[str], body: Body, phases: tuple[Phase, ...]) -> LoadSpec:
    targets = [f"{u}/v2/models/{m}/infer" for u in urls for m in MODELS]
    return LoadSpec(targets, body, SLO_MS, phases, timeout_s=5.0)


def _run_setup(
    setup: tuple[str, int, int],
    control: Service,
    out: Path,
    body: Body,
    rates: list[float],
    seconds: int,
    log,
) -> SetupResult:
    name, n, workers = setup
    routers = _routers(control, out, n, workers)
    try:
        expect = max(n, workers)
        wait_until(lambda: len(_registered(control)) == expect, 20.0, 0.2)
        time.sleep(1.5)  # every router runs the owners it was given
        registered = list(_registered(control))
        res = SetupResult(name, len(registered))
        urls = [r.url for r in routers]
        run_load(_spec(urls, body, (Phase("warm", 20.0, 3),)), out / "k6", "warm")
        cpu0 = _cpu_s(routers)
        time.sleep(IDLE_S)
        idle = (_cpu_s(routers) - cpu0) / IDLE_S  # CPU seconds a second, no load
        for rate in rates:
            fwd0, cpu0, t0 = _forwarded(registered), _cpu_s(routers), time.monotonic()
            load = run_load(_spec(urls, body, (Phase("main", rate, seconds),)), out / "k6")
            c = load.phase("main")
            cpu = _cpu_s(routers) - cpu0
            lvl = level_of(
                rate, c, _forwarded(registered) - fwd0, cpu, idle * (time.monotonic() - t0)
            )
            res.levels.append(lvl)
            log(
                f"{name}: {rate:g} req/s: {lvl.in_slo:.1%} in SLO, {lvl.s503:.1%} 503, "
                f"{lvl.other} other, {lvl.forwarded:.0%} forwarded, {lvl.cpu_ms:.2f} ms CPU/req "
                f"({lvl.marginal_ms:.2f} beyond idle)"
            )
        return res
    finally:
        for r in routers:
            r.stop(10)


def _forward_and_takeover(control: Service, out: Path, body: Body, res: Results, log) -> None:
    """With 2 routers: p50/p99 sent to the owner of tiny_mlp against sent to the other; then
    SIGKILL the owner and time until the other answers tiny_mlp 200."""
    routers = _routers(control, out, 2, 1)
    try:
        wait_until(lambda: len(_registered(control)) == 2, 20.0, 0.2)
        time.sleep(1.5)
        plan = httpx.get(f"{control.url}/v1/plan", timeout=5).json()
        owner = next(g["owner"] for g in plan["gpus"] if g["allocations"][0]["model"] == MODELS[0])
        by_url = {r.url: r for r in routers}
        other = next(u for u in by_url if u != owner)
        for label, url in (("direct", owner), ("forwarded", other)):
            spec = LoadSpec(
                [f"{url}/v2/models/{MODELS[0]}/infer"], body, SLO_MS, (Phase("p", 50.0, 8),)
            )
            c = run_load(spec, out / "k6", f"forward-{label}").phase("p")
            res.forward[f"{label}_p50_ms"] = c.p50_ms or 0.0
            res.forward[f"{label}_p99_ms"] = c.p99_ms or 0.0
        log(f"forward: {res.forward}")
        by_url[owner].kill()
        killed = time.monotonic()
        with httpx.Client(timeout=2) as c:
            infer = f"{other}/v2/models/{MODELS[0]}/infer"
            head = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(body.header_len),
            }
            data = body.path.read_bytes()
            if wait_until(lambda: c.post(infer, content=data, headers=head).status_code == 200, 15):
                res.takeover_s = time.monotonic() - killed
        log(f"killed router's GPUs served by the other after {res.takeover_s} s")
    finally:
        for r in routers:
            r.stop(10)


def bench_scaleout(
    out: Path = typer.Option(Path("bench-out/scaleout"), "--out", help="Working folder."),
    rates: str = typer.Option("300,600,900,1200", "--rates", help="Total req/s to try."),
    seconds: int = typer.Option(10, "--seconds", help="Seconds of load per rate."),
) -> None:
    """Routers side by side (1, 2, 3, --workers 2) under k6 load: spread, forwards, CPU."""
    from deploy.fleet import stop_fleet

    def log(line: str) -> None:
        typer.echo(line, err=True)

    out.mkdir(parents=True, exist_ok=True)
    res = Results("tnx bench scaleout " + shlex.join(sys.argv[3:]))
    fleet, repo, body, res.latency_ms = _setup(out, log)
    control = _control(out, repo)
    try:
        for setup in SETUPS:
            res.setups.append(
                _run_setup(setup, control, out, body, numbers("--rates", rates), seconds, log)
            )
        _forward_and_takeover(control, out, body, res, log)
    finally:
        control.stop(5)
        stop_fleet(fleet, grace_s=5)
    (out / "results.json").write_text(json.dumps(asdict(res), indent=1))
    for line in report(res):
        typer.echo(line)


def report(res: Results) -> list[str]:
    lines = [
        f"`{res.command}`",
        "",
        "| routers | rate req/s | sent | in SLO | 503 | other | p50 ms | p99 ms | forwarded "
        "| router CPU ms/req | beyond idle |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in res.setups:
        for lv in s.levels:
            lines.append(
                f"| {s.name} | {lv.rate:g} | {lv.sent} | {lv.in_slo:.1%} | {lv.s503:.1%} "
                f"| {lv.other} | {_ms(lv.p50_ms)} | {_ms(lv.p99_ms)} | {lv.forwarded:.0%} "
                f"| {lv.cpu_ms:.2f} | {lv.marginal_ms:.2f} |"
            )
    f = res.forward
    if f:
        lines += [
            "",
            f"A forward adds {f['forwarded_p50_ms'] - f['direct_p50_ms']:.2f} ms at p50 "
            f"({f['direct_p50_ms']:.2f} → {f['forwarded_p50_ms']:.2f}), "
            f"p99 {f['direct_p99_ms']:.2f} → {f['forwarded_p99_ms']:.2f} ms (50 req/s).",
        ]
    if res.takeover_s is not None:
        lines.append(
            f"A SIGKILLed router's model answered 200 by the other {res.takeover_s:.1f} s later."
        )
    held = [lv for s in res.setups for lv in s.levels if lv.in_slo >= 0.98]
    if held:
        # At the highest rate held, where fixed costs (plan polls, timers) weigh least.
        top = max(held, key=lambda lv: (lv.rate, lv.marginal_ms))
        lines += [
            "",
            f"Sizing at {top.marginal_ms:.2f} ms of router CPU a request beyond idle "
            f"({top.rate:g} req/s, {top.in_slo:.1%} in SLO):",
        ]
        lines += capacity_rows(top.marginal_ms)
    return lines


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"
