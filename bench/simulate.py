"""`tnx simulate`: a policy over a plan and a trace on the virtual clock (capacity planning).

The live `router.policy.BatchPolicy` (or a baseline of `bench.baselines`) runs in
`router.simulator.Simulator`; a batch of n takes l(n) of the plan's GPU type from the
profiles, times optional log-normal noise. The result counts every request once:
sent = in SLO + late + dropped, overall, per session and per second of the run.
`tnx bench simulate` sweeps policies, loads and traces on Zipf workloads planned by the
scheduler (BENCHMARKS.md, "Simulator").
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import typer

from bench.baselines import POLICIES, make_policy
from bench.traces import KINDS, load_trace, requests, write_csv
from control.cli import DEFAULT_PROFILES
from control.types import Plan
from model_repo_tools.profiles import LatencyCurve, ProfileSet
from router.native import active
from router.simulator import SimResult, Simulator, profile_latency
from router.types import Answered
from tnx.cli_args import names, numbers
from tnx.errors import UserInputError


def run(
    plan: Plan,
    curves: Mapping[tuple[str, str], LatencyCurve],
    *,
    policy: str = "tnx",
    drop: str = "early",
    trace: str = "poisson",
    seconds: float = 10.0,
    load: float = 1.0,
    seed: int = 0,
    noise_cv: float = 0.0,
    speed: float = 1.0,
    save_trace: Path | None = None,
) -> dict[str, Any]:
    """One simulation; the summary of `summarize` plus what was run. `speed` multiplies every
    batch time. `save_trace`: also write the arrivals as a CSV that `--trace FILE` replays."""
    duration = seconds * 1000.0
    arrivals = load_trace(plan, trace, duration, load=load, seed=seed)
    if save_trace is not None:
        write_csv(save_trace, arrivals)
    reqs = requests(plan, arrivals)
    pol = make_policy(policy, plan, curves, drop)
    lat = profile_latency(plan, curves, speed=speed, noise_cv=noise_cv, seed=seed)
    # The run allocates millions of small objects that live to its end and form no cycles
    # to speak of: the cyclic collector's passes over them cost ~20 % of the wall time.
    gc.disable()
    try:
        t0 = time.perf_counter()
        res = Simulator(pol, lat).run(reqs)
        wall = time.perf_counter() - t0
    finally:
        gc.enable()
    out: dict[str, Any] = {
        "policy": policy if policy != "tnx" else f"tnx/{drop}",
        "trace": trace,
        "load": load,
        "seconds": seconds,
        "seed": seed,
        "gpus": len(plan.gpus),
    }
    out.update(summarize(res, duration, len(plan.gpus)))
    out["wall_s"] = round(wall, 3)
    out["native"] = active()  # the policy compiled with mypyc (TNX_NATIVE=1, router.native)
    out["sim_requests_per_s"] = round(out["sent"] / wall) if wall > 0 else None
    return out


def summarize(res: SimResult, duration_ms: float, gpus: int) -> dict[str, Any]:
    """Counts (sent = in_slo + late + dropped), latency quantiles, GPU busy fraction, per
    session rows and a timeline of ~50 steps (by arrival time; rates per second)."""
    sessions: dict[str, list[int]] = {}  # sent, in_slo, late, dropped
    step = _step(duration_ms)
    steps = max(1, math.ceil(duration_ms / step))
    timeline = [[0, 0, 0, 0] for _ in range(steps)]
    reasons: dict[str, int] = {}
    lat: list[float] = []
    for o in res.outcomes:
        r = o.request
        row = sessions.setdefault(r.session, [0, 0, 0, 0])
        sec = timeline[min(steps - 1, max(0, int(r.arrival // step)))]
        if isinstance(o, Answered):
            lat.append(o.finished - r.arrival)
            k = 2 if o.finished > r.deadline else 1
        else:
            reasons[o.reason] = reasons.get(o.reason, 0) + 1
            k = 3
        row[0] += 1
        row[k] += 1
        sec[0] += 1
        sec[k] += 1
    lat.sort()
    busy = sum(end - start for start, end, _, _ in res.batches)
    # Batches may run past the trace's end (a backlog draining): count that time too.
    span = max([duration_ms, *(end for _, end, _, _ in res.batches)])
    sent = len(res.outcomes)
    in_slo = sum(r[1] for r in sessions.values())
    late = sum(r[2] for r in sessions.values())
    dropped = sum(r[3] for r in sessions.values())
    return {
        "sent": sent,
        "in_slo": in_slo,
        "late": late,
        "dropped": dropped,
        "dropped_by_reason": dict(sorted(reasons.items())),
        "slo_attainment": in_slo / sent if sent else math.nan,
        "goodput_per_s": in_slo / (duration_ms / 1000.0) if duration_ms > 0 else 0.0,
        "p50_ms": _q(lat, 0.50),
        "p99_ms": _q(lat, 0.99),
        "gpu_busy": busy / (gpus * span) if gpus and span > 0 else 0.0,
        "sessions": [
            {"session": s, "sent": a, "in_slo": b, "late": c, "dropped": d}
            for s, (a, b, c, d) in sorted(sessions.items())
        ],
        "timeline": [
            {
                "t_s": i * step / 1000.0,
                **{k: n * 1000.0 / step for k, n in zip(_KEYS, ns, strict=True)},
            }
            for i, ns in enumerate(timeline)
        ],
    }


_KEYS = ("sent", "in_slo", "late", "dropped")


def _step(duration_ms: float) -> float:
    """A round step of about a fiftieth of the run (at least 10 ms)."""
    raw = max(10.0, duration_ms / 50)
    unit = 10 ** math.floor(math.log10(raw))
    return min((m * unit for m in (1, 2, 5, 10) if m * unit >= raw), default=10 * unit)


def _q(xs: list[float], q: float) -> float | None:
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None


HEADER = (
    "| policy | trace | load | sent | in SLO | late | dropped | goodput (req/s) "
    "| p50 / p99 (ms) | GPU busy | wall (s) | simulated req/s |"
)


def row(r: Mapping[str, Any]) -> str:
    return (
        f"| {r['policy']} | {r['trace']} | {r['load']:g}x | {r['sent']} "
        f"| {100 * r['slo_attainment']:.2f} % | {r['late']} | {r['dropped']} "
        f"| {r['goodput_per_s']:,.0f} | {r['p50_ms']} / {r['p99_ms']} "
        f"| {100 * r['gpu_busy']:.0f} % | {r['wall_s']:.1f} | {r['sim_requests_per_s']:,} |"
    )


def table(rows: list[Mapping[str, Any]]) -> Iterator[str]:
    yield HEADER
    yield "|" + "---|" * (HEADER.count("|") - 1)
    for r in rows:
        yield row(r)


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Goodput and drops per second of the run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result["timeline"]
    t = [p["t_s"] for p in tl]
    fig, ax = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    ax[0].plot(t, [p["sent"] for p in tl], label="sent")
    ax[0].plot(t, [p["in_slo"] for p in tl], label="in SLO (goodput)")
    ax[0].set_ylabel("requests / s")
    ax[0].legend()
    ax[1].plot(t, [p["dropped"] for p in tl], color="tab:red", label="dropped")
    ax[1].plot(t, [p["late"] for p in tl], color="tab:orange", label="late")
    ax[1].set_ylabel("requests / s")
    ax[1].set_xlabel("simulated time (s)")
    ax[1].legend()
    fig.suptitle(f"{result['policy']}, {result['trace']} at {result['load']:g}x")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def simulate_cmd(
    plan: Path = typer.Option(..., "--plan", help="plan.json (from `tnx plan`)."),
    profiles: Path = typer.Option(DEFAULT_PROFILES, "--profiles", help="profiles.json."),
    seconds: float = typer.Option(10.0, "--seconds", help="Simulated seconds of traffic."),
    load: float = typer.Option(1.0, "--load", help="Offered load, x each planned rate."),
    policy: str = typer.Option("tnx", "--policy", help=" | ".join(POLICIES)),
    drop: str = typer.Option("early", "--drop", help="tnx's drop mode: early | lazy | none."),
    trace: str = typer.Option("poisson", "--trace", help=KINDS),
    seed: int = typer.Option(0, "--seed", help="Trace and noise seed."),
    noise: float = typer.Option(0.0, "--noise", help="CV of log-normal batch-time noise."),
    out: Path = typer.Option(..., "--out", help="Where to write result.json."),
    plot_: bool = typer.Option(False, "--plot", help="Also write goodput/drops over time (PNG)."),
    save_trace: Path | None = typer.Option(
        None, "--save-trace", help="Also write the arrivals as time_ms,session CSV."
    ),
) -> None:
    """Run a batching policy over a plan and a trace on a virtual clock; write result.json."""
    if seconds <= 0 or load < 0 or noise < 0:
        raise UserInputError("--seconds must be positive, --load and --noise not negative")
    p = Plan.load(plan)
    curves = ProfileSet.load(profiles).curves()
    res = run(
        p,
        curves,
        policy=policy,
        drop=drop,
        trace=trace,
        seconds=seconds,
        load=load,
        seed=seed,
        noise_cv=noise,
        save_trace=save_trace,
    )
    out.write_text(json.dumps(res, indent=1) + "\n")
    for line in table([res]):
        typer.echo(line)
    if plot_:
        png = out.with_suffix(".png")
        plot(res, png)
        typer.echo(f"plot: {png}")


def bench_simulate(
    profiles: Path = typer.Option(DEFAULT_PROFILES, "--profiles", help="profiles.json."),
    sessions: int = typer.Option(1000, "--sessions", help="Zipf-0.9 sessions to plan."),
    seconds: float = typer.Option(1.0, "--seconds", help="Simulated seconds per run."),
    loads: str = typer.Option("0.5,0.9,1.5,2", "--loads", help="Loads, comma-separated."),
    traces: str = typer.Option("poisson,gamma:4", "--traces", help="Traces, comma-separated."),
    policies: str = typer.Option(",".join(POLICIES), "--policies", help="Policies to run."),
    seed: int = typer.Option(0, "--seed", help="Workload and trace seed."),
    noise: float = typer.Option(0.0, "--noise", help="CV of batch-time noise."),
    gpu_memory: int = typer.Option(141_000_000_000, "--gpu-memory", help="Bytes per GPU."),
) -> None:
    """Policies x loads x traces on a planned Zipf workload: goodput, SLO attainment, speed."""
    from bench.workloads import zipf_sessions
    from control.problem import pool
    from control.scheduler import schedule

    load_list = numbers("--loads", loads)
    ps = ProfileSet.load(profiles)
    curves = ps.curves()
    gpu_type = ps.gpu_types()[0]
    models = sorted({p.model for p in ps.profiles if p.gpu_type == gpu_type})
    work = zipf_sessions(models, sessions, seed)
    plan = schedule(work, curves, pool(gpu_type, float(gpu_memory)), "tnx").plan
    rate = sum(a.rate for g in plan.gpus for a in g.allocations)
    typer.echo(
        f"{sessions} sessions on {len(plan.gpus)} {gpu_type} GPUs, {rate:,.0f} req/s planned; "
        f"{seconds:g} s per run, seed {seed}, noise {noise:g}; policy and simulator "
        f"{'compiled (TNX_NATIVE=1)' if active() else 'in Python'}"
    )
    typer.echo("")
    for line in table([]):
        typer.echo(line)
    for trace in names(traces):
        for load in load_list:
            for pol in names(policies):
                name, _, drop = pol.partition("/")
                r = run(
                    plan,
                    curves,
                    policy=name,
                    drop=drop or "early",
                    trace=trace,
                    seconds=seconds,
                    load=load,
                    seed=seed,
                    noise_cv=noise,
                )
                if r["sent"] != r["in_slo"] + r["late"] + r["dropped"]:
                    raise AssertionError(f"{pol}: requests unaccounted for")
                typer.echo(row(r))
