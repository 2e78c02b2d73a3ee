"""`tnx bench chaos`: faults under open-loop load, tnx against Triton reached directly.

Each scenario is one k6 run (`bench.open_loop`, one session's rate, counts second by
second) on a fresh `bench.chaos_stage` (3 servers, control plane, router), with one
fault `--fault-at` seconds in:

- `kill`: SIGKILL of the server the session is planned on (its whole process group);
- `stop`: SIGSTOP of that server for `--stop-s` seconds, then SIGCONT;
- `restart`: SIGKILL, then the server started again on its ports with no model loaded;
- `router`: SIGKILL of the router, started again at once;
- `control`: SIGKILL of the control plane, started again at once on its state.

Per run: requests sent, in SLO (of those due), late, 503, other (any answer but 200/503,
or none), lost (no answer within 10 s) and not sent (k6 out of VUs); the seconds until the plan no longer uses the failed server and,
after it is healthy again, until the plan uses it again; the worst second's in-SLO
rate against the median second before the fault. `triton`: the same k6 load sent round
robin straight to the three servers (the model loaded on each, no router, no control
plane), with the same server faults: what Triton alone does.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import typer

from bench import router_setup as st
from bench.chaos_stage import ChaosConfig, ChaosStage
from bench.open_loop import Body, Counts, LoadResult, LoadSpec, Phase, run_load
from deploy.fleet import restart_server, start_fleet, stop_fleet
from deploy.services import wait_until
from model_repo_tools.fleet import FleetGpu
from model_repo_tools.triton_client import TritonServer
from tnx.cli_args import names, one_of
from tnx.errors import UserInputError

SCENARIOS = ("kill", "stop", "restart", "router", "control")
SERVER_FAULTS = ("kill", "stop", "restart")
SYSTEMS = ("tnx", "triton")
TIMEOUT_S = 10.0  # k6 gives up on a request after this long: it counts as lost
LOADS = "tnx_control_model_loads_total"  # the control plane's loads, noted after its restart


@dataclass(slots=True)
class ChaosRow:
    scenario: str
    system: str  # "tnx" or "triton"
    total: Counts
    seconds: list[Counts]
    fault_at_s: float
    exclude_s: float | None = None  # fault → first plan without the failed server
    rejoin_s: float | None = None  # healthy again → first plan using it again
    outage_s: float | None = None  # router/control: killed → answering again
    notes: list[str] = field(default_factory=list)

    @property
    def in_slo(self) -> float:
        """Of the requests due (sent, and those k6 had no VU left to send)."""
        c = self.total
        due = c.sent + c.dropped
        return c.in_slo / due if due else 0.0

    def dip(self) -> tuple[float, float]:
        """(median in-SLO/s before the fault, worst in-SLO/s from the fault on)."""
        k = int(self.fault_at_s)
        before = [c.in_slo for c in self.seconds[1:k]] or [0]
        after = [c.in_slo for c in self.seconds[k:]] or [0]
        return statistics.median(before), min(after)


def _spec(targets: list[str], body: Body, cfg: ChaosConfig, seconds: int) -> LoadSpec:
    """One session's rate for `seconds`, counted second by second."""
    return LoadSpec(
        targets=targets,
        body=body,
        slo_ms=cfg.slo_ms,
        phases=(Phase("run", cfg.rate, seconds, per_second=True),),
        timeout_s=TIMEOUT_S,
        worst_ms=1000.0 * TIMEOUT_S,  # VUs for requests hung at a stopped server
    )


def _load_in_thread(spec: LoadSpec, workdir: Path, tag: str) -> tuple[threading.Thread, list]:
    box: list = []

    def run() -> None:
        try:
            box.append(run_load(spec, workdir, tag))
        except Exception as err:  # surfaced by the caller after join
            box.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _result(thread: threading.Thread, box: list) -> LoadResult:
    thread.join()
    if isinstance(box[0], Exception):
        raise box[0]
    return box[0]


def _wait_for_traffic(url: str, session: str, timeout_s: float = 30.0) -> float:
    """When the router first counts an arrival of `session` (k6 takes a while to start)."""

    def arrived(client: httpx.Client) -> bool:
        rows = client.get(f"{url}/v1/sessions").json()["sessions"]
        return any(r["id"] == session and r["arrivals"] > 0 for r in rows)

    with httpx.Client(timeout=1.0) as client:
        unreadable = (httpx.HTTPError, ValueError, KeyError)
        if not wait_until(lambda: arrived(client), timeout_s, 0.02, retry_on=unreadable):
            raise TimeoutError("k6 sent nothing through the router")
    return time.monotonic()


def _samples(text: str, name: str) -> list[str]:
    """The samples of metric `name` in Prometheus text, one line each."""
    from prometheus_client.parser import text_string_to_metric_families

    lines = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
                lines.append(
                    f"{s.name}{{{labels}}} {s.value:g}" if labels else f"{s.name} {s.value:g}"
                )
    return lines


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


@dataclass(frozen=True, slots=True)
class ChaosRun:
    """What every scenario of one `tnx bench chaos` shares."""

    repo: Path
    out: Path
    cfg: ChaosConfig
    seconds: int
    fault_at: float
    stop_s: float
    body: Body


def run_tnx(scenario: str, run: ChaosRun) -> ChaosRow:
    """One scenario on a fresh stage."""
    work = run.out / f"tnx-{scenario}"
    with ChaosStage(run.repo, work, run.cfg) as stage:
        assert stage.watch is not None
        thread, box = _load_in_thread(
            _spec([stage.infer_url], run.body, run.cfg, run.seconds), work, scenario
        )
        t0 = _wait_for_traffic(stage.router_url, stage.session)
        _sleep_until(t0 + run.fault_at)
        notes: list[str] = []
        row_extra: dict[str, float | None] = {}
        watch = stage.watch
        if scenario in SERVER_FAULTS:
            victim = stage.holder()
            notes.append(f"failed server: {victim.id} (held the session)")
            t_fault = time.monotonic()
            if scenario == "stop":
                stage.stop_server(victim)
                row_extra["exclude_s"] = _try(lambda: watch.wait(t_fault, _without(victim.id), 15))
                _sleep_until(t_fault + run.stop_s)
                stage.cont_server(victim)
            else:
                stage.kill_server(victim)
                if scenario == "restart":
                    stage.restart_server(victim)
                    notes.append(f"restarted empty, ready {time.monotonic() - t_fault:.1f} s in")
                else:
                    row_extra["exclude_s"] = _try(
                        lambda: watch.wait(t_fault, _without(victim.id), 15)
                    )
            t_back = time.monotonic()
            if scenario == "restart":
                row_extra["exclude_s"] = watch.first(t_fault, _without(victim.id))
            if scenario == "stop":
                row_extra["rejoin_s"] = _try(
                    lambda: watch.wait(t_back, _with(victim.id), 2 * run.cfg.epoch_s + 10)
                )
            elif scenario == "restart":
                # Back in use: planned there, and the model loaded there again.
                row_extra["rejoin_s"] = _try(
                    lambda: _wait_reloaded(stage, victim, t_back, 2 * run.cfg.epoch_s + 10)
                )
                notes.append(f"model READY on the restarted server: {stage.model_ready(victim)}")
        elif scenario == "router":
            t_fault = time.monotonic()
            stage.kill_router()
            stage.start_router()
            row_extra["outage_s"] = time.monotonic() - t_fault
        elif scenario == "control":
            before = stage.plan()["revision"]
            t_fault = time.monotonic()
            stage.kill_control()
            stage.start_control()
            row_extra["outage_s"] = time.monotonic() - t_fault
            after = stage.plan()["revision"]
            notes.append(f"plan revision {before} → {after} after the restart")
            notes.extend(_samples(httpx.get(f"{stage.control_url}/metrics").text, LOADS))
        res = _result(thread, box)
    per_s = res.seconds("run")
    return ChaosRow(
        scenario, "tnx", res.phase("run"), per_s, run.fault_at, notes=notes, **row_extra
    )


def _wait_reloaded(stage: ChaosStage, gpu: FleetGpu, after: float, timeout_s: float) -> float:
    watch = stage.watch
    assert watch is not None
    if not wait_until(
        lambda: watch.first(after, _with(gpu.id)) is not None and stage.model_ready(gpu), timeout_s
    ):
        raise TimeoutError(f"{gpu.id} not reloaded within {timeout_s:g} s")
    return time.monotonic() - after


def _without(gpu: str):
    return lambda gpus: bool(gpus) and gpu not in gpus


def _with(gpu: str):
    return lambda gpus: gpu in gpus


def _try(fn) -> float | None:
    try:
        return fn()
    except TimeoutError:
        return None


def run_triton(scenario: str, run: ChaosRun) -> ChaosRow:
    """The same load round robin straight to the servers, the same fault on the first."""
    work = run.out / f"triton-{scenario}"
    fleet = start_fleet(run.cfg.servers, run.repo, work / "fleet")
    try:
        for g in fleet.gpus:
            with TritonServer(g.server) as s:
                s.load(run.cfg.model)
        targets = [f"http://{g.http}/v2/models/{run.cfg.model}/infer" for g in fleet.gpus]
        thread, box = _load_in_thread(
            _spec(targets, run.body, run.cfg, run.seconds), work, scenario
        )
        # No router to count arrivals: k6 starts sending about a second after launch.
        _sleep_until(time.monotonic() + 1.0 + run.fault_at)
        victim = fleet.gpus[0]
        assert victim.pid is not None
        import os
        import signal

        if scenario == "stop":
            os.killpg(victim.pid, signal.SIGSTOP)
            time.sleep(run.stop_s)
            os.killpg(victim.pid, signal.SIGCONT)
        else:
            os.killpg(victim.pid, signal.SIGKILL)
            if scenario == "restart":
                fleet = restart_server(fleet, victim.id, run.repo)
        res = _result(thread, box)
    finally:
        stop_fleet(fleet, grace_s=5)
    notes = [f"fault on {victim.id}, one of {len(fleet.gpus)} round-robin targets"]
    return ChaosRow(
        scenario, "triton", res.phase("run"), res.seconds("run"), run.fault_at, notes=notes
    )


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} s"


def table(rows: list[ChaosRow]) -> list[str]:
    out = [
        "| fault | system | sent | in SLO | late | 503 | other | lost | not sent | "
        "plan off the server | planned again | outage | in-SLO/s before → worst |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.total
        before, worst = r.dip()
        out.append(
            f"| {r.scenario} | {r.system} | {c.sent} | {c.in_slo} ({100 * r.in_slo:.1f} %) | "
            f"{c.late} | {c.s503} | {c.other} | {c.lost} | {c.dropped} | "
            f"{_s(r.exclude_s)} | {_s(r.rejoin_s)} | "
            f"{_s(r.outage_s)} | {before:.0f} → {worst:.0f} |"
        )
    return out


def bench_chaos(
    out: Path = typer.Option(Path("bench-out/chaos"), "--out", help="Working folder."),
    scenarios: str = typer.Option(",".join(SCENARIOS), "--scenarios", help=",".join(SCENARIOS)),
    systems: str = typer.Option(",".join(SYSTEMS), "--systems", help=",".join(SYSTEMS)),
    seconds: int = typer.Option(45, "--seconds", help="Length of each run."),
    fault_at: float = typer.Option(10.0, "--fault-at", help="Seconds into the run."),
    stop_s: float = typer.Option(10.0, "--stop-s", help="stop: seconds SIGSTOPped."),
    rate: float = typer.Option(200.0, "--rate", help="Requests per second."),
    slo_ms: float = typer.Option(100.0, "--slo-ms", help="The session's SLO."),
    epoch_s: float = typer.Option(5.0, "--epoch-s", help="The control plane's epoch."),
) -> None:
    """Server, router and control-plane faults under k6 load; tnx beside Triton alone."""
    faults = [one_of("--scenarios", x, SCENARIOS) for x in names(scenarios)]
    which = [one_of("--systems", x, SYSTEMS) for x in names(systems)]
    if not 0 < fault_at < seconds:
        raise UserInputError(f"--fault-at {fault_at:g}: must lie within --seconds {seconds}")
    cfg = ChaosConfig(rate=rate, slo_ms=slo_ms, epoch_s=epoch_s)
    out.mkdir(parents=True, exist_ok=True)
    onnx = st.export_models([cfg.model], out)
    repo = st.build_repo(onnx, out / "repo")
    body = st.write_body(cfg.model, out / "body.bin")
    rows: list[ChaosRow] = []
    for n in faults:
        for system in which:
            if system == "triton" and n not in SERVER_FAULTS:
                continue
            typer.echo(f"{n} / {system} ...", err=True)
            runner = run_tnx if system == "tnx" else run_triton
            row = runner(n, ChaosRun(repo, out, cfg, seconds, fault_at, stop_s, body))
            rows.append(row)
            typer.echo("  " + table([row])[-1], err=True)
    command = "tnx bench chaos " + shlex.join(sys.argv[3:])
    lines = [f"`{command.strip()}`", "", *table(rows), ""]
    for r in rows:
        if r.notes:
            lines.append(f"- {r.scenario}/{r.system}: " + "; ".join(r.notes))
    (out / "chaos.md").write_text("\n".join(lines) + "\n")
    (out / "chaos.json").write_text(json.dumps([asdict(r) for r in rows], indent=1, default=str))
    for line in lines:
        typer.echo(line)
