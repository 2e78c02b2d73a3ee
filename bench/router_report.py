"""Markdown tables and the goodput plot of `tnx bench router`, ready to paste into BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from bench.router_setup import PlanSetup
from bench.router_types import SYSTEMS, BenchConfig, LatencyRow, Results, Row, SimRow


def _ms(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _pct(n: int, of: int) -> str:
    return f"{n} ({100.0 * n / max(of, 1):.1f}%)"


HEADER = (
    "| system | load | offered rps | goodput rps | 503 | late 200s | other | not sent (k6) "
    "| p50 ms | p99 ms | mean batch | router CPU ms/req | k6 CPU ms/req |"
)


def format_row(r: Row) -> str:
    cpu = "—" if r.router_cpu_ms_per_req is None else f"{r.router_cpu_ms_per_req:.2f}"
    batch = "—" if r.mean_batch is None else f"{r.mean_batch:.1f}"
    return (
        f"| {r.system} | {r.load:g}× | {r.offered_rps:.1f} | {r.goodput_rps:.1f} "
        f"| {_pct(r.dropped, r.sent)} | {_pct(r.late, r.ok)} | {r.other} | {r.not_sent} "
        f"| {_ms(r.p50_ms)} | {_ms(r.p99_ms)} | {batch} | {cpu} | {r.k6_cpu_ms_per_req:.2f} |"
    )


def goodput_table(rows: list[Row]) -> list[str]:
    rows = sorted(rows, key=lambda r: (SYSTEMS.index(r.system), r.load))
    return [HEADER, "|" + "---|" * 13] + [format_row(r) for r in rows]


def target_lines(rows: list[Row]) -> list[str]:
    """Issue 4's targets, per system."""
    out = []
    for system in sorted({r.system for r in rows}, key=SYSTEMS.index):
        rs = {r.load: r for r in rows if r.system == system}
        worst_late = max(100.0 * r.late / max(r.ok, 1) for r in rs.values())
        parts = [f"{system}: late ≤ {worst_late:.1f}% of 200s at any load"]
        if 0.5 in rs:
            parts.append(f"503s at 0.5× {100.0 * rs[0.5].dropped / max(rs[0.5].sent, 1):.1f}%")
        if 1.0 in rs and 2.0 in rs and rs[1.0].goodput_rps > 0:
            parts.append(f"goodput 2×/1× = {rs[2.0].goodput_rps / rs[1.0].goodput_rps:.2f}")
        out.append("; ".join(parts))
    return out


def simulated_lines(sims: list[SimRow], measured: list[Row], setup: PlanSetup) -> list[str]:
    """Measured and simulated goodput per router system and level, a column pair per trace."""
    traces = list(dict.fromkeys(s.variant for s in sims))
    by = {(s.system, s.load, s.variant): s for s in sims}
    batches = {(r.system, r.load): (r.mean_batch, r.batch_ms) for r in measured}
    head = "| system | load | offered rps | measured in SLO | measured goodput rps "
    for t in traces:
        head += f"| sim {t}: in SLO | goodput rps | sim / measured "
    head += "| mean batch, ms in flight (router) |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    keys = sorted({(s.system, s.load) for s in sims}, key=lambda k: (SYSTEMS.index(k[0]), k[1]))
    for system, load in keys:
        first = next(by[(system, load, t)] for t in traces if (system, load, t) in by)
        line = (
            f"| {system} | {load:g}× | {first.offered_rps:.1f} "
            f"| {100 * first.measured_in_slo:.1f}% | {first.measured_goodput_rps:.1f} "
        )
        for t in traces:
            s = by.get((system, load, t))
            if s is None:
                line += "| — | — | — "
                continue
            ratio = "—" if s.ratio is None else f"{s.ratio:.2f}"
            line += f"| {100 * s.in_slo_share:.1f}% | {s.goodput_rps:.1f} | {ratio} "
        n, ms = batches.get((system, load), (None, None))
        out.append(line + f"| {_ms(n, 1)}, {_ms(ms, 1)} |")
    if sims:
        b = setup.batch
        out += [
            "",
            f"simulated: {sims[0].seeds} runs per cell (seeds 0..{sims[0].seeds - 1}), batch "
            f"times l(n) from profiles.json × log-normal noise, CV {sims[0].noise_cv:.3f} (the "
            f"fleet's l({b}) timings at setup); l({b}) = {setup.latency_ms[b]:.1f} ms in the plan",
        ]
        speeds = [s for s in sims if s.speed != 1.0]
        if speeds:
            lo, hi = min(s.speed for s in speeds), max(s.speed for s in speeds)
            out.append(
                f"measured batch times: l(n) × the level's ms in flight / l(mean batch), "
                f"{lo:.2f}–{hi:.2f}"
            )
    return out


def latency_lines(rows: list[LatencyRow]) -> list[str]:
    out = [
        "| system | rate | sent | in SLO | late | 503 | other | not sent (k6) | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.system} | {r.rate:g}/s | {r.sent} | {r.in_slo} | {r.late} | {r.s503} "
            f"| {r.other} | {r.not_sent} "
            f"| {_ms(r.p50_ms, 2)} | {_ms(r.p99_ms, 2)} |"
        )
    by = {r.system: r for r in rows}
    if "router" in by and "triton" in by:
        a, b = by["router"], by["triton"]
        if None not in (a.p50_ms, a.p99_ms, b.p50_ms, b.p99_ms):
            out.append("")
            out.append(
                f"added by the router: p50 {a.p50_ms - b.p50_ms:+.2f} ms, "  # type: ignore[operator]
                f"p99 {a.p99_ms - b.p99_ms:+.2f} ms"  # type: ignore[operator]
            )
    return out


def recovery_lines(res: Results, cfg: BenchConfig) -> list[str]:
    out = [
        "| system | overload | then | goodput in overload | 503 in overload "
        "| in SLO, each second after (%) | seconds to ≥ 99 % | not sent (k6) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res.recovery:
        seconds = " ".join(f"{100 * f:.0f}" for f in r.per_second)
        rec = f"> {len(r.per_second)}" if r.recovered_s is None else str(r.recovered_s)
        out.append(
            f"| {r.system} | {cfg.overload:g}× ({r.overload_rps:.0f}/s, {cfg.duration_s:g} s) "
            f"| {cfg.low_load:g}× ({r.low_rps:.0f}/s) | {r.overload_goodput_rps:.1f}/s "
            f"| {_pct(r.overload_503, r.overload_sent)} | {seconds} | {rec} | {r.not_sent} |"
        )
    return out


def max_rate_lines(res: Results, cfg: BenchConfig) -> list[str]:
    out = [
        "| system | rate | sent | in SLO | late | 503 | other | not sent (k6) | p99 ms | held |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res.max_rate:
        out.append(
            f"| {r.system} | {r.rate:g}/s | {r.sent} | {_pct(r.in_slo, r.sent + r.not_sent)} "
            f"| {r.late} | {r.s503} | {r.other} | {r.not_sent} | {_ms(r.p99_ms, 1)} "
            f"| {'yes' if r.held else 'no'} |"
        )
    best = []
    for system in ("router", "triton"):
        held = [r.rate for r in res.max_rate if r.system == system and r.held]
        best.append(f"{system} {max(held):g} req/s" if held else f"{system} none of the rates")
    out += ["", f"highest rate held ({100 * cfg.in_slo_target:g} % in SLO): " + ", ".join(best)]
    return out


def perf_analyzer_lines(res: Results) -> list[str]:
    out = [
        "| target | endpoint | concurrency | throughput infer/s | p50 µs | p99 µs | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res.perf_analyzer:
        tput = "—" if r.throughput is None else f"{r.throughput:.0f}"
        out.append(
            f"| {r.target} | {r.url} | {r.concurrency} | {tput} | {_ms(r.p50_us)} "
            f"| {_ms(r.p99_us)} | {r.error or ''} |"
        )
    by = {r.target: r for r in res.perf_analyzer}
    a, b = by.get("router"), by.get("triton")
    if a and b and a.throughput and b.throughput:
        out += ["", f"router / direct throughput: {a.throughput / b.throughput:.2f}"]
    return out


def plan_line(p: PlanSetup) -> str:
    return (
        f"{p.model}: plan batch {p.batch}, l({p.batch}) = {p.latency_ms[p.batch]:.1f} ms, duty "
        f"cycle {p.duty_cycle_ms:.1f} ms, SLO {p.slo_ms:.0f} ms, C = {p.capacity_rps:.1f} req/s"
    )


def lines(res: Results, cfg: BenchConfig) -> list[str]:
    out = [f"command: `{res.command}`", ""]
    for p in (res.convnet, res.tiny):
        if p is not None:
            out.append(plan_line(p))
    if res.batcher is not None:
        out.append(
            f"Triton's batcher ({res.convnet.model if res.convnet else ''}_dynbatch): "
            f"max_queue_delay {res.batcher.delay_us} µs, max_queue_size {res.batcher.max_queue}"
        )
    tiny_slo = res.tiny.slo_ms if res.tiny else cfg.tiny_slo_ms
    if res.latency:
        out += ["", f"### Added latency: tiny_mlp at {cfg.latency_rate:g} req/s", ""]
        out += latency_lines(res.latency)
    if res.goodput:
        out += ["", "### Goodput: convnet64, multiples of C", ""]
        out += goodput_table(res.goodput) + [""] + target_lines(res.goodput)
    if res.simulated and res.convnet is not None:
        out += ["", "### Simulated against measured: convnet64, the same plan and rates", ""]
        out += simulated_lines(res.simulated, res.goodput, res.convnet)
    if res.recovery:
        out += ["", "### Recovery after overload: convnet64", ""]
        out += recovery_lines(res, cfg)
    if res.max_rate:
        out += ["", f"### Highest rate held: tiny_mlp, SLO {tiny_slo:g} ms", ""]
        out += max_rate_lines(res, cfg)
    if res.perf_analyzer:
        out += ["", "### perf_analyzer: tiny_mlp on one server, concurrency 8", ""]
        out += perf_analyzer_lines(res)
    return out


def plot(rows: list[Row], setup: PlanSetup, path: Path, title: str = "") -> Path:
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
    ax.set_xlabel("offered load (req/s, k6 constant arrival rate)")
    ax.set_ylabel(f"goodput (answers within {setup.slo_ms:.0f} ms, req/s)")
    ax.set_title(title or "goodput against offered load", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
