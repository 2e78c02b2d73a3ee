"""`tnx bench router`: the tnx router against Triton reached directly, on one fleet, load from k6.

On real `tritonserver` processes (`deploy.fleet`), each part measures the router (`tnx router
serve`, a child process) and Triton's own HTTP endpoint side by side, with the same k6 client
(`bench.open_loop`: open loop, evenly spaced arrivals, one binary KServe v2 sample per
request, latency on the client's clock from send to last byte):

- `latency`: `tiny_mlp` at a low rate (50 req/s): p50/p99 through the router and direct;
  the difference is what the router adds.
- `goodput`: `convnet64` at 0.5, 1, 1.5, 2 and 4 × the planned capacity C (batch b, duty cycle
  headroom · l(b) per server, SLO = slo_factor · l(b), l measured on the fleet): 200s within
  the SLO per second, 503s, late 200s. Systems: the router with `--drop early|lazy|none`, and
  `triton`: Triton's dynamic batcher, round robin over the servers, on a copy of the model
  with `max_queue_delay` l(b)/2, `preferred_batch_size` b and a queue policy that rejects
  after the SLO. At each level the systems take turns, so a neighbour's burst on a shared
  machine does not land on one system only.
- `simulated`: after `goodput`, the simulator (`bench.router_sim`) on the same plan and
  profiles, at the rates k6 sent, with the router's drop modes: simulated goodput beside the
  measured, evenly spaced arrivals as k6 sends and Poisson ones. Alone (`--parts
  simulated`), it replays the goodput levels of the run already in `--out`.
- `recovery`: 4 × C, then 0.5 × C at once (one k6 run): the fraction in SLO second by second
  of the low phase and the seconds until every later second holds ≥ 99 % (router with early
  drop, and Triton's batcher).
- `max-rate`: `tiny_mlp` with a 50 ms SLO at rising rates (500, 1000, 2000, 3000 req/s, a
  few seconds each, until two in a row miss): the highest held with ≥ 99 % of requests
  answered 200 within the SLO.
- `perf-analyzer`: NVIDIA's perf_analyzer (`bench.tools` installs it), concurrency 8, on
  `tiny_mlp` of one server, direct and through a router planned on that server alone.

`tiny_mlp` runs with Triton's batcher on (no delay), for the router's batches and direct
requests alike. Requests k6 could not send (too few VUs) are reported as `not sent`: a
failure of the load generator, not a drop.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from bench import router_setup as st
from bench.router_parts import Stage, convnet_parts, setup_plans, tiny_parts
from bench.router_sim import load_measured, simulated_part
from bench.router_types import PARTS, SYSTEMS, BenchConfig, Results
from tnx.cli_args import names, numbers, one_of
from tnx.errors import UserInputError


def check(cfg: BenchConfig) -> None:
    for p in cfg.parts:
        one_of("--parts", p, PARTS)
    for x in cfg.systems:
        one_of("--systems", x, SYSTEMS)
    if not cfg.parts:
        raise UserInputError("--parts: nothing to run")
    if "simulated" in cfg.parts and "goodput" not in cfg.parts and cfg.parts != ("simulated",):
        raise UserInputError(
            "--parts: simulated replays goodput levels: add goodput, or run it alone on a "
            "finished --out"
        )
    if cfg.duration_s <= 0 or cfg.recovery_s < 1 or cfg.sim_seeds < 1:
        raise UserInputError("--duration, --recovery-s and --sim-seeds must be positive")


def run_bench(cfg: BenchConfig, command: str = "", log=print) -> Results:
    from deploy.fleet import start_fleet, stop_fleet

    check(cfg)
    if cfg.parts == ("simulated",):
        return replay(cfg, command, log)
    convnet = bool({"goodput", "recovery"} & set(cfg.parts))
    tiny = bool({"latency", "max-rate", "perf-analyzer"} & set(cfg.parts))
    cfg.out.mkdir(parents=True, exist_ok=True)
    models = [m for m, on in ((st.CONVNET, convnet), (st.TINY, tiny)) if on]
    log(f"exporting {', '.join(models)} and building the repository under {cfg.out}")
    onnx = st.export_models(models, cfg.out)
    repo = st.build_repo(onnx, cfg.out / "repo")
    bodies = {m: st.write_body(m, cfg.out / f"request-{m}.bin") for m in models}
    res = Results(command)
    fleet = start_fleet(cfg.servers, repo, cfg.out / "fleet")
    stage = Stage(cfg, fleet, repo, bodies, res, log)
    try:
        setup_plans(stage, convnet, tiny)
        for p in (res.tiny, res.convnet):
            if p is not None:
                log(
                    f"{p.model}: l(b) ms {', '.join(f'{b}: {ms:.1f}' for b, ms in p.latency_ms.items())}"
                )
        if tiny:
            tiny_parts(stage)
        if convnet:
            convnet_parts(stage)
    finally:
        stop_fleet(fleet, grace_s=5)
    if "simulated" in cfg.parts and res.convnet is not None:
        # After the fleet stops: the simulator's CPU time cannot disturb a measurement.
        res.simulated = simulated_part(
            res.goodput, res.convnet, cfg.out, cfg.duration_s, cfg.sim_seeds, log
        )
    (cfg.out / "results.json").write_text(
        json.dumps({"config": {k: str(v) for k, v in asdict(cfg).items()}, **asdict(res)}, indent=1)
    )
    return res


def replay(cfg: BenchConfig, command: str, log=print) -> Results:
    """The simulated part alone, on the goodput levels of the run in `cfg.out`: results.json
    keeps what it held, with the new simulated rows."""
    data, res, seconds = load_measured(cfg.out)
    assert res.convnet is not None
    res.simulated = simulated_part(res.goodput, res.convnet, cfg.out, seconds, cfg.sim_seeds, log)
    res.command = f"{res.command}, then {command}" if command else res.command
    data["simulated"] = [asdict(r) for r in res.simulated]
    (cfg.out / "results.json").write_text(json.dumps(data, indent=1))
    return res


def bench_router(
    out: Path = typer.Option(Path("bench-out/router"), "--out", help="Working folder."),
    parts: str = typer.Option(",".join(PARTS), "--parts", help=",".join(PARTS)),
    duration: float = typer.Option(15.0, "--duration", help="Seconds of load per level."),
    loads: str = typer.Option(
        "0.5,1,1.5,2,4", "--loads", help="goodput: multiples of the planned capacity C."
    ),
    sim_seeds: int = typer.Option(
        5, "--sim-seeds", help="simulated: runs per level and trace, counts summed."
    ),
    systems: str = typer.Option(
        ",".join(SYSTEMS), "--systems", help="goodput: early,lazy,none,triton"
    ),
    batch: int = typer.Option(8, "--batch", help="convnet64's planned batch size."),
    slo_factor: float = typer.Option(5.0, "--slo-factor", help="SLO = factor × l(batch)."),
    headroom: float = typer.Option(1.5, "--headroom", help="Duty cycle = headroom × l(batch)."),
    servers: int = typer.Option(2, "--servers", help="tritonserver processes."),
    recovery_s: int = typer.Option(10, "--recovery-s", help="recovery: seconds of low load."),
    max_rates: str = typer.Option(
        "500,1000,2000,3000", "--max-rates", help="max-rate: rates to try, req/s."
    ),
    max_rate_s: float = typer.Option(
        None, "--max-rate-s", help="max-rate: seconds per rate (default: min(5, --duration))."
    ),
    png: Path = typer.Option(None, "--png", help="Goodput plot (default OUT/goodput.png)."),
) -> None:
    """Router vs Triton direct, load from k6: latency, goodput, recovery, max rate, perf_analyzer."""
    from bench import router_report as report

    cfg = BenchConfig(
        out=out,
        parts=names(parts),
        servers=servers,
        duration_s=duration,
        # goodput and recovery: convnet64 at multiples of its planned capacity
        batch=batch,
        slo_factor=slo_factor,
        headroom=headroom,
        loads=numbers("--loads", loads),
        systems=names(systems),
        recovery_s=recovery_s,
        sim_seeds=sim_seeds,
        # max-rate: tiny_mlp at rising rates
        max_rates=numbers("--max-rates", max_rates),
        max_rate_s=max_rate_s if max_rate_s is not None else min(5.0, duration),
    )
    command = "tnx bench router " + shlex.join(sys.argv[3:])
    res = run_bench(cfg, command.strip(), log=lambda line: typer.echo(line, err=True))
    for line in report.lines(res, cfg):
        typer.echo(line)
    if res.goodput and res.convnet is not None:
        title = (
            f"{st.CONVNET} on {cfg.servers} Triton servers (CPU), plan batch {cfg.batch}, "
            f"SLO {res.convnet.slo_ms:.0f} ms"
        )
        path = report.plot(res.goodput, res.convnet, png or out / "goodput.png", title)
        typer.echo(f"plot: {path}")
