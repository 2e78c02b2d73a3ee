"""The parts of `tnx bench router` (see bench/router.py): each drives k6 at the router and at
Triton direct on the stage's fleet and appends its rows to the results."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from bench import router_setup as st
from bench.open_loop import Body, Counts, LoadResult, LoadSpec, Phase, run_load
from bench.perf_analyzer import PaRow
from bench.router_types import (
    RECOVERY_SYSTEMS,
    BenchConfig,
    LatencyRow,
    MaxRateRow,
    RecoveryRow,
    Results,
    Row,
)
from deploy.services import Service
from model_repo_tools.fleet import Fleet

# ---- measuring ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def router_counter(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    )


BUSY = "tnx_router_gpu_busy_seconds_total"  # a batch in flight, dispatch to answer


def router_batches(router: Service) -> tuple[float, float]:
    return (
        router_counter(router.url, "tnx_router_batch_size_sum"),
        router_counter(router.url, "tnx_router_batch_size_count"),
    )


def triton_batches(fleet: Fleet, model: str) -> tuple[float, float]:
    from model_repo_tools.triton_client import TritonServer

    samples = batches = 0.0
    for g in fleet.gpus:
        with TritonServer(g.server) as s:
            for stat in s.statistics(model).get("model_stats", []):
                samples += float(stat.get("inference_count", 0))
                batches += float(stat.get("execution_count", 0))
    return samples, batches


def warm_up(
    s: Stage, name: str, targets: list[str], body: Body, slo_ms: float, rate: float
) -> None:
    """A few seconds of the same k6 load, not counted: the router's first batches at new sizes
    and the servers' first runs are slow (seen: 10-20 % of the first second dropped at 50/s)."""
    spec = LoadSpec(
        targets, body, slo_ms, (Phase("main", rate, s.cfg.warm_up_s),), timeout_s=s.cfg.timeout_s
    )
    s.load(f"warm-up-{name}", spec)


def recovered_after(per_second: list[float], target: float) -> int | None:
    """Seconds until every later second holds `target` (0: it never dropped below)."""
    for i in range(len(per_second)):
        if all(f >= target for f in per_second[i:]):
            return i
    return None


def _counts(c: Counts) -> tuple[int, int, int, int, int, int]:
    """A `RateRow`'s counts: sent, in SLO, late, 503, other, not sent (k6's dropped)."""
    return c.sent, c.in_slo, c.late, c.s503, c.other, c.dropped


def in_slo_share(c: Counts) -> float:
    """In SLO over all requests due, sent or not: a request k6 could not send was not served."""
    due = c.sent + c.dropped
    return c.in_slo / due if due else 0.0


# ---- parts --------------------------------------------------------------------------------


@dataclass(slots=True)
class Stage:
    """What the parts share: the fleet, its repository, request bodies, plans."""

    cfg: BenchConfig
    fleet: Fleet
    repo: Path
    bodies: dict[str, Body]
    res: Results
    log: Callable[[str], None]

    def load(self, name: str, spec: LoadSpec) -> LoadResult:
        return run_load(spec, self.cfg.out / "k6", name)


def latency_part(s: Stage, targets: dict[str, list[str]]) -> None:
    cfg, tiny = s.cfg, s.res.tiny
    assert tiny is not None
    for system in ("triton", "router"):
        spec = LoadSpec(
            targets[system],
            s.bodies[st.TINY],
            tiny.slo_ms,
            (Phase("main", cfg.latency_rate, cfg.duration_s),),
            timeout_s=cfg.timeout_s,
        )
        c = s.load(f"latency-{system}", spec).phase("main")
        row = LatencyRow(system, cfg.latency_rate, *_counts(c), c.p50_ms, c.p99_ms)
        s.res.latency.append(row)
        s.log(f"latency {system}: p50 {row.p50_ms} ms, p99 {row.p99_ms} ms, {c.sent} sent")
        time.sleep(1.0)


def max_rate_part(s: Stage, targets: dict[str, list[str]]) -> None:
    cfg, tiny = s.cfg, s.res.tiny
    assert tiny is not None
    for system in ("triton", "router"):
        misses = 0
        for rate in cfg.max_rates:
            spec = LoadSpec(
                targets[system],
                s.bodies[st.TINY],
                tiny.slo_ms,
                (Phase("main", rate, cfg.max_rate_s),),
                timeout_s=cfg.timeout_s,
            )
            c = s.load(f"max-rate-{system}-{rate:g}", spec).phase("main")
            held = c.dropped == 0 and in_slo_share(c) >= cfg.in_slo_target
            row = MaxRateRow(system, rate, *_counts(c), c.p99_ms, held)
            s.res.max_rate.append(row)
            s.log(f"max-rate {system} {rate:g}/s: {100 * in_slo_share(c):.1f}% in SLO")
            time.sleep(1.0)  # let queues drain before the next rate
            misses = 0 if held else misses + 1
            if misses == 2:  # one miss can be a neighbour's burst; two end the ramp
                break


def tiny_parts(s: Stage) -> None:
    cfg = s.cfg
    direct = [f"http://{g.http}/v2/models/{st.TINY}/infer" for g in s.fleet.gpus]
    if {"latency", "max-rate"} & set(cfg.parts):
        assert s.res.tiny is not None
        router = st.start_router(cfg.out, s.res.tiny.plan, "early", "router-tiny")
        try:
            targets = {"triton": direct, "router": [f"{router.url}/v2/models/{st.TINY}/infer"]}
            for name, t in targets.items():
                warm_up(s, f"tiny-{name}", t, s.bodies[st.TINY], s.res.tiny.slo_ms, 200.0)
            if "latency" in cfg.parts:
                latency_part(s, targets)
            if "max-rate" in cfg.parts:
                max_rate_part(s, targets)
        finally:
            router.stop(15)
    if "perf-analyzer" in cfg.parts:
        perf_analyzer_part(s)


def perf_analyzer_part(s: Stage) -> None:
    """perf_analyzer on one server, direct and through a router planned on that server."""
    from bench import perf_analyzer
    from bench.tools import find_perf_analyzer

    cfg, tiny = s.cfg, s.res.tiny
    assert tiny is not None
    server = s.fleet.gpus[0].http or ""
    pa = find_perf_analyzer()
    if pa is None:
        for target in ("triton", "router"):
            s.res.perf_analyzer.append(
                PaRow(target, "", 8, error="perf_analyzer not installed: tnx bench tools")
            )
        return
    window_ms = int(min(5.0, max(1.0, cfg.duration_s / 3)) * 1000)
    workdir = cfg.out / "perf_analyzer"
    plan = st.write_plan(
        s.fleet,
        st.TINY,
        tiny.latency_ms,
        tiny.batch,
        tiny.slo_ms,
        cfg.headroom,
        cfg.out / "plan-tiny-1server.json",
        gpus=1,
    )
    s.res.perf_analyzer.append(
        perf_analyzer.run(pa, "triton", st.TINY, server, workdir, 8, window_ms)
    )
    router = st.start_router(cfg.out, plan.plan, "early", "router-tiny-1server")
    try:
        url = router.url.removeprefix("http://")
        s.res.perf_analyzer.append(
            perf_analyzer.run(pa, "router", st.TINY, url, workdir, 8, window_ms)
        )
    finally:
        router.stop(15)
    for r in s.res.perf_analyzer:
        s.log(f"perf_analyzer {r.target}: {r.throughput} infer/s {r.error or ''}")


def goodput_level(
    s: Stage,
    system: str,
    load: float,
    targets: list[str],
    router: Service | None,
    batch_counts: Callable[[], tuple[float, float]],
) -> Row:
    cfg, conv = s.cfg, s.res.convnet
    assert conv is not None
    # The slowest answer to expect (VUs in flight = rate × it): without drops, no bound.
    worst = cfg.timeout_s * 1000 if system == "none" else None
    spec = LoadSpec(
        targets,
        s.bodies[st.CONVNET],
        conv.slo_ms,
        (Phase("main", load * conv.capacity_rps, cfg.duration_s),),
        worst_ms=worst,
        timeout_s=cfg.timeout_s,
    )
    cpu0 = late0 = busy0 = 0.0
    if router is not None:
        cpu0 = cpu_seconds(router.proc.pid)
        late0 = router_counter(router.url, "tnx_router_answered_late_total")
        busy0 = router_counter(router.url, BUSY)
    samples0, batches0 = batch_counts()
    k6_cpu0 = children_cpu_s()
    res = s.load(f"goodput-{system}-{load:g}", spec)
    k6_cpu = children_cpu_s() - k6_cpu0
    c = res.phase("main")
    per_req = 1000.0 / max(c.sent, 1)
    row = Row(
        system=system,
        load=load,
        offered_rps=c.sent / cfg.duration_s,
        sent=c.sent,
        ok=c.ok,
        in_slo=c.in_slo,
        late=c.late,
        dropped=c.s503,
        other=c.other,
        not_sent=c.dropped,
        unanswered=c.sent - c.answered,
        goodput_rps=c.in_slo / cfg.duration_s,
        p50_ms=c.p50_ms,
        p99_ms=c.p99_ms,
        router_cpu_ms_per_req=None
        if router is None
        else (cpu_seconds(router.proc.pid) - cpu0) * per_req,
        k6_cpu_ms_per_req=k6_cpu * per_req,
        errors=res.errors,
    )
    samples, batches = batch_counts()
    if batches > batches0:
        row.mean_batch = (samples - samples0) / (batches - batches0)
    if router is not None:
        row.router_late = int(router_counter(router.url, "tnx_router_answered_late_total") - late0)
        if batches > batches0:
            busy = router_counter(router.url, BUSY) - busy0
            row.batch_ms = 1000.0 * busy / (batches - batches0)
    return row


def recovery_run(s: Stage, system: str, targets: list[str]) -> RecoveryRow:
    cfg, conv = s.cfg, s.res.convnet
    assert conv is not None
    high, low = cfg.overload * conv.capacity_rps, cfg.low_load * conv.capacity_rps
    spec = LoadSpec(
        targets,
        s.bodies[st.CONVNET],
        conv.slo_ms,
        (
            Phase("overload", high, cfg.duration_s),
            Phase("low", low, cfg.recovery_s, per_second=True),
        ),
        timeout_s=cfg.timeout_s,
    )
    res = s.load(f"recovery-{system}", spec)
    over, seconds = res.phase("overload"), res.seconds("low")
    per_second = [in_slo_share(c) for c in seconds]
    return RecoveryRow(
        system=system,
        overload_rps=high,
        low_rps=low,
        overload_goodput_rps=over.in_slo / cfg.duration_s,
        overload_503=over.s503,
        overload_sent=over.sent,
        per_second=per_second,
        recovered_s=recovered_after(per_second, cfg.in_slo_target),
        not_sent=over.dropped + sum(c.dropped for c in seconds),
    )


def convnet_parts(s: Stage) -> None:
    cfg, conv = s.cfg, s.res.convnet
    assert conv is not None and s.res.batcher is not None
    from model_repo_tools.triton_client import TritonServer

    override = st.triton_override(s.repo, st.CONVNET_BATCHER, conv, s.res.batcher)
    for g in s.fleet.gpus:
        with TritonServer(g.server) as srv:
            srv.load(st.CONVNET_BATCHER, override)
    systems = list(cfg.systems)
    if "recovery" in cfg.parts:
        systems += [x for x in RECOVERY_SYSTEMS if x not in systems]
    routers: dict[str, Service] = {}
    try:
        targets: dict[str, list[str]] = {}
        for system in systems:
            if system == "triton":
                targets[system] = [
                    f"http://{g.http}/v2/models/{st.CONVNET_BATCHER}/infer" for g in s.fleet.gpus
                ]
            else:
                routers[system] = st.start_router(cfg.out, conv.plan, system, f"router-{system}")
                targets[system] = [f"{routers[system].url}/v2/models/{st.CONVNET}/infer"]
            warm_up(
                s,
                system,
                targets[system],
                s.bodies[st.CONVNET],
                conv.slo_ms,
                0.5 * conv.capacity_rps,
            )
        if "goodput" in cfg.parts:
            for load in cfg.loads:
                for system in cfg.systems:
                    router = routers.get(system)
                    counts = (
                        partial(router_batches, router)
                        if router is not None
                        else partial(triton_batches, s.fleet, st.CONVNET_BATCHER)
                    )
                    row = goodput_level(s, system, load, targets[system], router, counts)
                    s.res.goodput.append(row)
                    s.log(f"goodput {system} {load:g}×: {row.goodput_rps:.1f} req/s")
                    time.sleep(1.0)  # let the servers settle
        if "recovery" in cfg.parts:
            for system in RECOVERY_SYSTEMS:
                row = recovery_run(s, system, targets[system])
                s.res.recovery.append(row)
                s.log(f"recovery {system}: {row.recovered_s} s")
                time.sleep(1.0)
    finally:
        for router in routers.values():
            router.stop(15)


def setup_plans(s: Stage, convnet: bool, tiny: bool) -> None:
    from model_repo_tools.triton_client import TritonServer

    cfg, out = s.cfg, s.cfg.out
    s.fleet.save(out / "fleet.json")
    measured: list[tuple[str, dict[int, float]]] = []
    for model, wanted in ((st.CONVNET, convnet), (st.TINY, tiny)):
        if not wanted:
            continue
        for g in s.fleet.gpus:
            with TritonServer(g.server) as srv:
                srv.load(model)
        if model == st.CONVNET:
            sizes = sorted({1, 2, 4, cfg.batch, 2 * cfg.batch})
            times = st.measure_latency_samples(s.fleet, model, sizes)
            lat = st.medians(times)
            slo = cfg.slo_factor * lat[cfg.batch]
            s.res.convnet = st.write_plan(
                s.fleet, model, lat, cfg.batch, slo, cfg.headroom, out / "plan-convnet.json"
            )
            s.res.convnet.latency_cv = st.latency_cv(times)
            s.res.batcher = st.batcher_settings(s.res.convnet, len(s.fleet.gpus))
        else:
            lat = st.measure_latency(s.fleet, model, [1, 8, st.TINY_BATCH, 64])
            s.res.tiny = st.write_plan(
                s.fleet,
                model,
                lat,
                st.TINY_BATCH,
                cfg.tiny_slo_ms,
                cfg.headroom,
                out / "plan-tiny.json",
            )
        measured.append((model, lat))
    st.write_profiles(measured, s.fleet, out / "profiles.json")
