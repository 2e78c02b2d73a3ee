"""`python -m bench.queries` (`tnx bench queries`): a two-stage query's goodput under k6 load,
through the router's `POST /v1/queries/{query}` against running its stages as independent
sessions by a client (issue 11, the query figure of BENCHMARKS.md).

On real `tritonserver` processes (`deploy.fleet`): the query `pipe` is `expand` (one sample
of 64 features → 4 items of 64, `bench.query_models`) then `tiny_mlp` on each item (fan-out
4), with an end-to-end SLO. l(b) of both models is measured on the fleet, the scheduler
plans the query (query analysis splits the SLO, Nexus §6.2) at the planned rate R, and one
router serves the plan. At each multiple of R, two systems take turns under the same k6
open-loop load (evenly spaced arrivals, JSON bodies, the client's clock):

- `query`: one request per query to `POST /v1/queries/pipe` (bench/k6/kserve_open_loop.js);
- `client`: the client runs the stages as independent sessions, as the expanded sessions
  were used before queries ran in the router: the first stage's request to
  `/v2/models/expand/infer` with its budget as `X-SLO-Ms`, then one request per item to
  `/v2/models/tiny_mlp/infer` with the second budget, all at once (bench/k6/query_chain.js).

A query counts in SLO when its last answer came within the SLO. Besides goodput (queries
in SLO per second) the table gives the stage requests the router received per query in
SLO: work spent on queries that were not answered in time shows there.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import typer

from bench.open_loop import (
    Body,
    Counts,
    LoadSpec,
    Phase,
    run_load,
)
from bench.query_models import EXPAND, FANOUT, export_expand
from tnx.cli_args import numbers
from tnx.errors import UserInputError

TINY = "tiny_mlp"
QUERY = "pipe"
CHAIN = Path(__file__).parent / "k6" / "query_chain.js"
BATCHES = [1, 2, 4, 8, 16, 32]
SYSTEMS = ("query", "client")
# Both systems run on one router, which marks a server down when a batch outlives its last
# deadline by this grace: on this 2-core machine shared with other jobs, the default 50 ms
# took the plan's only server down for a probe interval now and then (a batch timed out
# after 121 ms at 1 x R, 7.5 % of that run's queries 503), which measures the machine.
GRACE_MS = 500.0


@dataclass(slots=True)
class Row:
    system: str
    multiple: float
    rate: float
    counts: Counts
    stage_requests: int  # received by the router's two stage sessions in the run
    drops: dict[str, int]  # the router's drops of stage requests in the run, per reason

    @property
    def goodput(self) -> float:
        return self.counts.in_slo / self.counts.duration_s

    @property
    def per_good(self) -> float | None:
        return self.stage_requests / self.counts.in_slo if self.counts.in_slo else None


def plan_query(out: Path, fleet, lat: dict[str, dict[int, float]], slo_ms: float, rate: float):
    """profiles.json and plan.json (with the query's budgets) for `pipe` at `rate`."""
    from bench.router_setup import write_profiles
    from control.problem import fleet_classes
    from control.query_analysis import workload_query_plans
    from control.scheduler import schedule_workload
    from control.types import Workload
    from model_repo_tools.profiles import ProfileSet

    write_profiles(list(lat.items()), fleet, out / "profiles.json")
    stages = [
        {"id": "expand", "model": EXPAND},
        {"id": "mlp", "model": TINY, "after": "expand", "fanout": FANOUT},
    ]
    workload = Workload.model_validate(
        {"queries": [{"id": QUERY, "slo_ms": slo_ms, "rate": rate, "stages": stages}]}
    )
    curves = ProfileSet.load(out / "profiles.json").curves()
    sched = schedule_workload(workload, curves, fleet_classes(fleet))
    if sched.plan.unplaced:
        raise UserInputError(f"the query does not fit the fleet: {sched.plan.unplaced[0].reason}")
    plan = sched.plan.model_copy(update={"queries": workload_query_plans(workload, sched.sessions)})
    plan.save(out / "plan.json")
    return plan


def _counts(url: str) -> tuple[int, dict[str, int]]:
    """The router's stage requests of the query so far, and its drops of them per reason."""
    from prometheus_client.parser import text_string_to_metric_families

    rows = httpx.get(f"{url}/v1/sessions", timeout=5).json()["sessions"]
    arrivals = sum(r["arrivals"] for r in rows if r["id"].startswith(f"{QUERY}/"))
    drops: dict[str, int] = {}
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name != "tnx_router_dropped":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["session"].startswith(QUERY):
                reason = sample.labels["reason"]
                drops[reason] = drops.get(reason, 0) + int(sample.value)
    return arrivals, drops


def start_router(out: Path, grace_ms: float):
    from deploy.fleet import free_port
    from deploy.services import spawn

    args = ["router", "serve", "--plan", str(out / "plan.json"), "--fleet", str(out / "fleet.json")]
    args += ["--profiles", str(out / "profiles.json"), "--batch-grace-ms", f"{grace_ms:g}"]
    return spawn("router", args, free_port(), "/v2/health/ready", out / "router.log")


def run_chain(spec: LoadSpec, stages: dict[str, tuple[str, float]], workdir: Path, tag: str):
    """k6 with bench/k6/query_chain.js; `stages`: 1, 2 → (infer URL, budget)."""
    env = {}
    for k, (url, budget) in stages.items():
        env[f"STAGE{k}"], env[f"SLO{k}"] = url, repr(budget)
    return run_load(spec, workdir, tag, script=CHAIN, extra_env=env)


def run_bench(
    out: Path,
    servers: int,
    slo_ms: float,
    rate: float,
    multiples: list[float],
    duration_s: int,
    grace_ms: float = GRACE_MS,
) -> tuple[list[Row], dict]:
    from bench.router_setup import build_repo, export_models, measure_latency
    from deploy.fleet import start_fleet, stop_fleet
    from model_repo_tools.repository import add_model
    from model_repo_tools.triton_client import TritonServer

    out.mkdir(parents=True, exist_ok=True)
    onnx = export_models([TINY], out)
    repo = build_repo(onnx, out / "repo")
    add_model(export_expand(out / "models"), repo, backend="python", max_batch=64)
    fleet = start_fleet(servers, repo, out / "fleet")
    router = None
    try:
        fleet.save(out / "fleet.json")
        for g in fleet.gpus:
            with TritonServer(g.server) as s:
                s.load(EXPAND)
                s.load(TINY)
        lat = {m: measure_latency(fleet, m, BATCHES, shape=(64,)) for m in (EXPAND, TINY)}
        plan = plan_query(out, fleet, lat, slo_ms, rate)
        budgets = {s.id: s.budget_ms for s in plan.queries[0].stages}
        router = start_router(out, grace_ms)
        x = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
        body = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x[0].tolist()}
            ]
        }
        raw = json.dumps(body).encode()
        (out / "body.json").write_bytes(raw)
        for _ in range(20):  # warm: metadata, first batches
            httpx.post(f"{router.url}/v1/queries/{QUERY}", content=raw, timeout=10)
        stages = {
            1: (f"{router.url}/v2/models/{EXPAND}/infer", budgets["expand"]),
            2: (f"{router.url}/v2/models/{TINY}/infer", budgets["mlp"]),
        }
        rows = []
        body_file = Body(out / "body.json", len(raw))
        for system in SYSTEMS:  # warm both paths at R (latency fits, connections), not counted
            warm = LoadSpec(
                [f"{router.url}/v1/queries/{QUERY}"], body_file, slo_ms, (Phase("warm", rate, 3),)
            )
            if system == "query":
                run_load(warm, out / "k6", "warm-query")
            else:
                run_chain(warm, stages, out / "k6", "warm-client")
        for i, m in enumerate(multiples):
            # Turns alternate, so a neighbour's burst on a shared machine lands on both.
            for system in SYSTEMS if i % 2 == 0 else SYSTEMS[::-1]:
                phase = Phase(f"x{m:g}".replace(".", "_"), m * rate, duration_s)
                targets = [f"{router.url}/v1/queries/{QUERY}"] if system == "query" else []
                spec = LoadSpec(targets, body_file, slo_ms, (phase,))
                before, drops_before = _counts(router.url)
                tag = f"{system}-x{m:g}"
                if system == "query":
                    res = run_load(spec, out / "k6", tag)
                else:
                    res = run_chain(spec, stages, out / "k6", tag)
                time.sleep(1.0)  # the last answers counted
                after, drops_after = _counts(router.url)
                drops = {k: v - drops_before.get(k, 0) for k, v in drops_after.items()}
                drops = {k: v for k, v in drops.items() if v}
                rows.append(Row(system, m, m * rate, res.phase(phase.name), after - before, drops))
                typer.echo(_line(rows[-1]), err=True)
        setup = {
            "latency_ms": {m: {str(b): round(v, 3) for b, v in d.items()} for m, d in lat.items()},
            "budgets_ms": budgets,
            "gpus": len(plan.gpus),
            "plan": plan.model_dump(mode="json"),
        }
        return rows, setup
    finally:
        if router is not None:
            router.stop(15)
        stop_fleet(fleet, grace_s=5)


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f} %" if d else "-"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _line(r: Row) -> str:
    c = r.counts
    per = "-" if r.per_good is None else f"{r.per_good:.2f}"
    return (
        f"| {r.multiple:g} × R ({r.rate:g}/s) | {r.system} | {r.goodput:.1f} | "
        f"{_pct(c.in_slo, c.sent)} | {_pct(c.s503, c.sent)} | {_pct(c.late, c.sent)} | "
        f"{_pct(c.other + c.dropped, c.sent)} | {_ms(c.p50_ms)} | {_ms(c.p99_ms)} | {per} | "
        + (", ".join(f"{k} {v}" for k, v in sorted(r.drops.items())) or "-")
        + " |"
    )


def report(rows: list[Row], setup: dict, slo_ms: float, rate: float, command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        f"Query `{QUERY}`: `expand` → `tiny_mlp` × {FANOUT} items, SLO {slo_ms:g} ms, planned "
        f"at R = {rate:g} queries/s on {setup['gpus']} server(s); budgets from query analysis: "
        + ", ".join(f"{k} {v:g} ms" for k, v in setup["budgets_ms"].items())
        + ".",
        "",
        "| load | system | goodput (q/s in SLO) | in SLO | 503 | late | other | p50 ms | "
        "p99 ms | stage requests per query in SLO | stage requests dropped (router) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(_line(r) for r in rows),
    ]
    return "\n".join(lines)


def plot(rows: list[dict], rate: float, slo_ms: float, path: Path) -> Path:
    """Goodput against offered load per system; `rows`: results.json's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "query": "POST /v1/queries (stages in the router)",
        "client": "stages as independent sessions, chained by the client",
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for system in SYSTEMS:
        rs = sorted((r for r in rows if r["system"] == system), key=lambda r: r["rate"])
        ax.plot([r["rate"] for r in rs], [r["goodput"] for r in rs], "o-", label=labels[system])
    top = max(r["rate"] for r in rows)
    ax.plot([0, top], [0, top], ":", color="grey", label="goodput = offered")
    ax.axvline(rate, ls="--", color="grey", lw=0.8, label="planned rate R")
    ax.set_xlabel("offered load (queries/s, k6 constant arrival rate)")
    ax.set_ylabel(f"goodput (queries answered within {slo_ms:g} ms, /s)")
    ax.set_title(f"two-stage query (fan-out {FANOUT}), SLO {slo_ms:g} ms", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def bench_queries(
    out: Path = typer.Option(Path("bench-out/queries"), "--out", help="Working folder."),
    servers: int = typer.Option(2, "--servers", help="tritonserver processes."),
    slo_ms: float = typer.Option(100.0, "--slo-ms", help="The query's end-to-end SLO."),
    rate: float = typer.Option(50.0, "--rate", help="Planned queries per second (R)."),
    multiples: str = typer.Option("0.5,1,2,4", "--multiples", help="Loads, in multiples of R."),
    duration_s: int = typer.Option(10, "--duration", help="Seconds per load and system."),
    grace_ms: float = typer.Option(GRACE_MS, "--grace-ms", help="The router's --batch-grace-ms."),
) -> None:
    """A two-stage query through POST /v1/queries against its stages run by the client."""
    loads = numbers("--multiples", multiples)
    if servers < 1 or duration_s < 1 or rate <= 0 or slo_ms <= 0:
        raise UserInputError("--servers, --duration, --rate and --slo-ms must be positive")
    via_tnx = Path(sys.argv[0]).name == "tnx"
    command = ("tnx " if via_tnx else "python -m bench.queries ") + shlex.join(sys.argv[1:])
    rows, setup = run_bench(out, servers, slo_ms, rate, list(loads), duration_s, grace_ms)
    text = report(rows, setup, slo_ms, rate, command)
    (out / "report.md").write_text(text + "\n")
    data = {"setup": setup, "rows": [{**asdict(r), "goodput": r.goodput} for r in rows]}
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    plot(data["rows"], rate, slo_ms, out / "queries-goodput.png")
    typer.echo(text)


if __name__ == "__main__":
    typer.run(bench_queries)
