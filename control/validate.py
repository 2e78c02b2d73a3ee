"""A checker of DESIGN.md's plan invariants and its lower bound on GPUs.

Independent of the packers on purpose: it reads only the plan, the sessions and
the profiles, and evaluates l(b) through `LatencyCurve`, so a packer bug cannot
hide behind a shared helper. Comparisons allow 1e-6 relative slack for floats.
Sessions sharing a prefix on a GPU count as the prefix batch they run as
(control.prefix_rule), in the cycle, in memory and in each one's SLO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from control.prefix_rule import prefix_batches
from control.tables import EPS, BatchTable
from control.types import Plan, Session
from model_repo_tools.prefix_names import parts
from model_repo_tools.profiles import LatencyCurve

TOL = 1e-6


def _le(a: float, b: float) -> bool:
    return a <= b + TOL * max(abs(a), abs(b), 1.0)


def validate_plan(
    plan: Plan,
    sessions: Iterable[Session],
    curves: Mapping[tuple[str, str], LatencyCurve],
    gpu_memory: Mapping[str, float] | None = None,
    default_memory: float = math.inf,
) -> list[str]:
    """Every broken invariant of `plan`, one line each; empty when the plan is valid.

    `gpu_memory` maps GPU ids to bytes; GPUs absent from it get `default_memory`.
    """
    by_id = {s.id: s for s in sessions}
    split = parts({m for m, _ in curves})
    out: list[str] = []
    placed: dict[str, float] = {}
    seen: set[str] = set()
    for g in plan.gpus:
        where = f"gpu {g.gpu}"
        if g.gpu in seen:
            out.append(f"{where}: listed twice")
        seen.add(g.gpu)
        d = g.duty_cycle_ms
        total_lat = total_mem = 0.0
        known = [
            (a.session, by_id[a.session].model, a.batch, by_id[a.session].slo_ms)
            for a in g.allocations
            if a.session in by_id
        ]
        runs = prefix_batches(known, d, split, lambda m, t=g.gpu_type: curves.get((m, t)))
        in_batch = {sid: b for b in runs.values() for sid in b.sessions}
        for b in runs.values():
            total_lat += b.latency_ms
            total_mem += b.memory
        for a in g.allocations:
            s = by_id.get(a.session)
            if s is None:
                out.append(f"{where}: unknown session {a.session}")
                continue
            if a.model != s.model:
                out.append(f"{where}: {a.session} runs {a.model}, session is {s.model}")
            if abs(a.slo_ms - s.slo_ms) > TOL * s.slo_ms:
                out.append(f"{where}: {a.session} slo_ms {a.slo_ms:g}, session has {s.slo_ms:g}")
            curve = curves.get((s.model, g.gpu_type))
            if curve is None:
                out.append(f"{where}: no profile for {s.model} on {g.gpu_type}")
                continue
            placed[a.session] = placed.get(a.session, 0.0) + a.rate
            if a.batch > curve.max_batch:
                out.append(f"{where}: {a.session} batch {a.batch} > profiled {curve.max_batch}")
                continue
            lb = curve.latency(a.batch)
            if a.session in in_batch:
                lb = in_batch[a.session].latency_ms  # the whole path: prefix, every suffix
            else:
                total_lat += lb
                total_mem += curve.memory(a.batch)
            if not _le(a.rate * d / 1000.0, a.batch):
                out.append(
                    f"{where}: {a.session} gets {a.rate * d / 1000:.4g} per cycle > batch {a.batch}"
                )
            if not _le(d + lb, s.slo_ms):
                out.append(f"{where}: {a.session} d + l(b) = {d + lb:.4g} ms > SLO {s.slo_ms:g}")
        if not _le(total_lat, d):
            out.append(f"{where}: batches take {total_lat:.4g} ms > duty cycle {d:.4g}")
        mem = (gpu_memory or {}).get(g.gpu, default_memory)
        if not _le(total_mem, mem):
            out.append(f"{where}: memory {total_mem:.4g} > {mem:.4g} bytes")
    short: dict[str, float] = {}
    for u in plan.unplaced:
        if u.session not in by_id:
            out.append(f"unplaced: unknown session {u.session}")
        short[u.session] = short.get(u.session, 0.0) + u.rate
    for s in by_id.values():
        got = placed.get(s.id, 0.0) + short.get(s.id, 0.0)
        if abs(got - s.rate) > TOL * max(s.rate, 1.0):
            out.append(
                f"session {s.id}: placed + unplaced = {got:.6g} req/s, requested {s.rate:.6g}"
            )
    return out


def session_need(s: Session, tables: Iterable[BatchTable]) -> float:
    """min over GPU types of min over b of l(b)/d_max(b); inf when no type can serve it."""
    return min((t.need(s.rate, s.slo_ms) for t in tables), default=math.inf)


def lower_bound(
    sessions: Iterable[Session],
    curves: Mapping[tuple[str, str], LatencyCurve],
    gpu_types: Iterable[str] | None = None,
    tables: Callable[[str, str], BatchTable | None] | None = None,
) -> int:
    """DESIGN.md's bound: Σ over placeable sessions of their least need, rounded up.

    b ranges over every integer batch up to the largest profiled (l is linear between
    listed sizes), since a plan may use any of them. GPU memory is ignored. `tables`
    (model, gpu type → BatchTable of `curves`) shares tables already built.
    """
    types = sorted({t for _, t in curves} if gpu_types is None else set(gpu_types))
    sessions = list(sessions)
    # Each session's least need over the types, every session of a model at once
    # (BatchTable.need_many), then summed in the sessions' order.
    needs = [math.inf] * len(sessions)
    by_model: dict[str, list[int]] = {}
    for i, s in enumerate(sessions):
        by_model.setdefault(s.model, []).append(i)
    for model, idx in by_model.items():
        rates = [sessions[i].rate for i in idx]
        slos = [sessions[i].slo_ms for i in idx]
        for ty in types:
            if (model, ty) not in curves:
                continue
            t = tables(model, ty) if tables is not None else None
            if t is None:
                t = BatchTable.from_curve(curves[(model, ty)])
            # A shared table may hold them already (control.problem.resolve computes them).
            got = [t.memo.get(("need", r, s)) for r, s in zip(rates, slos, strict=True)]
            if None in got:
                got = t.need_many(rates, slos)
            for i, v in zip(idx, got, strict=True):
                needs[i] = min(needs[i], v)
    total = 0.0
    for need in needs:
        if math.isfinite(need):
            total += need
    return math.ceil(total - EPS)
