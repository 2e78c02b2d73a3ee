"""The scheduler's entry point: sessions + profiles + GPUs (+ a previous plan) → plan.

Pure: data in, plan out, no I/O and no clock. Policies map demands to nodes; this
module resolves sessions to GPU classes, fits the nodes onto a fixed fleet (what
does not fit is re-planned on other free GPUs, then listed as unplaced), names the
GPUs and writes the `plan.json` contract.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from control.batch_oblivious import plan_oblivious
from control.incremental import Moves, moves_between, node_pairs, replan
from control.migrate import HeldBack
from control.nexus_paper import plan_nexus
from control.nodes import Node
from control.problem import Demand, GpuClass, TableCache, resolve
from control.query_analysis import need_on, query_sessions, split_slo
from control.tables import EPS
from control.tnx_policy import plan_tnx, plan_tnx_leftovers
from control.types import Plan, Session, Unplaced, Workload
from control.validate import lower_bound
from model_repo_tools.profiles import LatencyCurve
from tnx.errors import PlanningError

Policy = Callable[[list[Demand]], list[Node]]
POLICIES: dict[str, Policy] = {
    "tnx": plan_tnx,
    "nexus-paper": plan_nexus,
    "batch-oblivious": plan_oblivious,
}
# What an incremental re-plan packs onto new GPUs with (a policy's cheaper form).
LEFTOVERS: dict[str, Policy] = {"tnx": plan_tnx_leftovers}


@dataclass(slots=True)
class Schedule:
    plan: Plan
    lower_bound: int
    moves: Moves = field(default_factory=Moves)
    sessions: list[Session] = field(default_factory=list)  # queries' stages included
    # Incremental re-plans: the moves that serving the new rates needed, the budget for
    # freeing GPUs beyond them, and what that budget held back.
    required_moves: int = 0
    move_budget: int = 0
    held_back: HeldBack | None = None

    @property
    def gpus(self) -> int:
        return len(self.plan.gpus)


def schedule(
    sessions: Iterable[Session],
    curves: Mapping[tuple[str, str], LatencyCurve],
    classes: list[GpuClass],
    policy: str = "tnx",
    previous: Plan | None = None,
    max_moves: int | None = None,
) -> Schedule:
    """Plan `sessions`; with `previous`, re-plan incrementally from it, spending at most
    `max_moves` moves (default: control.incremental.move_budget) beyond those that
    serving the new rates needs."""
    # The planner allocates about a million short-lived objects and no reference cycles
    # (refcounting frees them); the cyclic collector's full passes over what lives on
    # (tables, their memos, the previous plan) took a fifth of a 10,000-session re-plan.
    # The pause is process-wide (the control plane plans in a worker thread) and lasts
    # one plan; the collector is left as it was found.
    with _collector_paused():
        return _schedule(sessions, curves, classes, policy, previous, max_moves)


@contextmanager
def _collector_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _schedule(
    sessions: Iterable[Session],
    curves: Mapping[tuple[str, str], LatencyCurve],
    classes: list[GpuClass],
    policy: str,
    previous: Plan | None,
    max_moves: int | None,
) -> Schedule:
    if policy not in POLICIES:
        raise PlanningError(f"unknown policy {policy!r} (choose {', '.join(POLICIES)})")
    if not classes:
        raise PlanningError("no GPUs to plan onto")
    sessions = list(sessions)
    fn = POLICIES[policy]
    tables = TableCache(curves)
    prob = resolve(sessions, tables, classes)
    types = {c.gpu_type for c in classes}
    bound = lower_bound(sessions, curves, types, tables.get)
    re = None
    target = None
    if previous is not None:
        # The GPUs a fresh plan would use, estimated without making one (that would cost a
        # plan's time): the previous plan's GPUs per bound, at the new rates' bound.
        was = previous.lower_bound
        if was is None:  # a plan from elsewhere
            was = _bound_at(sessions, previous.rates(), tables, types)
        if was > 0 and previous.gpus:
            target = math.ceil(bound * len(previous.gpus) / was - 1e-9)
        re = replan(previous, prob, tables, LEFTOVERS.get(policy, fn), max_moves, target)
        nodes = re.nodes
    else:
        nodes = fn(prob.demands)
    nodes, short = fit_fleet(nodes, classes, tables, fn)
    # New GPUs of a pool get ids the previous plan did not use: an id names one GPU's
    # models across re-plans.
    plan = emit(nodes, prob.unplaced + short, {g.gpu for g in previous.gpus} if previous else set())
    plan.lower_bound = bound
    out = Schedule(plan, bound, Moves(), sessions)
    if previous is not None and re is not None:
        # From the nodes emitted: reading 10,000 allocations back cost a tenth of a re-plan.
        out.moves = moves_between(re.before, node_pairs(nodes))
        out.required_moves, out.move_budget, out.held_back = re.required, re.budget, re.held_back
        if target is not None:
            re.held_back.behind = max(0, len(plan.gpus) - target)
    return out


def _bound_at(
    sessions: list[Session], rates: Mapping[str, float], tables: TableCache, types: set[str]
) -> int:
    """DESIGN.md's lower bound for `sessions` at other `rates` (those it lists)."""
    groups: dict[str, list[Session]] = {}
    for s in sessions:
        if s.id in rates:
            groups.setdefault(s.model, []).append(s)
    total = 0.0
    for model, group in groups.items():
        r, slo = [rates[s.id] for s in group], [s.slo_ms for s in group]
        needs = [t.need_many(r, slo) for ty in sorted(types) if (t := tables.get(model, ty))]
        for per_type in zip(*needs, strict=True):
            need = min(per_type)
            total += need if math.isfinite(need) else 0.0
    return math.ceil(total - EPS)


def workload_sessions(
    workload: Workload, curves: Mapping[tuple[str, str], LatencyCurve], classes: list[GpuClass]
) -> list[Session]:
    """The workload's sessions plus its queries' stages, SLOs split by query analysis."""
    need = need_on(curves, (c.gpu_type for c in classes))
    out = list(workload.sessions)
    for q in workload.queries:
        budgets, _ = split_slo(q, need)
        out += query_sessions(q, budgets)
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[0]
        raise PlanningError(f"session id {dup!r} is both a session and a query stage")
    return out


def schedule_workload(
    workload: Workload,
    curves: Mapping[tuple[str, str], LatencyCurve],
    classes: list[GpuClass],
    *args: Any,
    **kwargs: Any,
) -> Schedule:
    """`schedule` (its further arguments) for the workload's sessions and query stages."""
    return schedule(workload_sessions(workload, curves, classes), curves, classes, *args, **kwargs)


def fit_fleet(
    nodes: list[Node], classes: list[GpuClass], tables: TableCache, fn: Policy
) -> tuple[list[Node], list[Unplaced]]:
    """Keep at most as many nodes per class as it has GPUs, busiest first; re-plan the
    rest on classes with free GPUs, and list what still does not fit."""
    free = {c: c.count for c in classes}
    kept: list[Node] = []
    pending = nodes
    short: list[Unplaced] = []
    over: dict[str, tuple[Demand, float]] = {}
    for attempt in range(len(classes) + 1):
        over = {}
        for c in classes:
            mine = [n for n in pending if n.gclass == c]
            # Nodes already on a named GPU (incremental) stay first, then the busiest.
            mine.sort(key=lambda n: (n.gpu is None, -n.occupancy))
            room = free[c]
            take = mine if math.isinf(room) else mine[: int(room)]
            kept += take
            free[c] = room - len(take)
            for n in mine[len(take) :]:
                for p in n.pieces.values():
                    d, r = over.get(p.demand.id, (p.demand, 0.0))
                    over[p.demand.id] = (d, r + p.rate)
        if not over:
            return kept, short
        open_classes = [c for c in classes if free[c] > 0]
        if not open_classes or attempt == len(classes):
            break
        left = [Session(id=d.id, model=d.model, slo_ms=d.slo, rate=r) for d, r in over.values()]
        prob = resolve(left, tables, open_classes)
        short += [
            Unplaced(
                session=u.session,
                rate=u.rate,
                reason=f"fleet full; elsewhere: {u.reason}",
                model=u.model,
            )
            for u in prob.unplaced
        ]
        pending = fn(prob.demands)
    for d, r in over.values():
        short.append(
            Unplaced(
                session=d.id,
                rate=r,
                reason=f"fleet full: no free {d.gclass.gpu_type} GPU",
                model=d.model,
            )
        )
    return kept, short


def emit(nodes: list[Node], unplaced: list[Unplaced], reserved: set[str] | None = None) -> Plan:
    """The plan.json of `nodes`; nodes without a GPU get the first free id of their class
    (pool ids in `reserved` are skipped)."""
    taken = {n.gpu for n in nodes if n.gpu is not None}
    reserved = reserved or set()
    counters: dict[GpuClass, int] = {}
    pools: dict[GpuClass, list[str]] = {}
    gpus = []
    for n in nodes:
        if n.gpu is None:
            n.gpu = _next_id(n.gclass, taken, counters, pools, reserved)
            taken.add(n.gpu)
        allocs = [
            {
                "session": p.demand.id,
                "model": p.demand.model,
                "batch": p.batch,
                "rate": p.rate,
                "slo_ms": p.demand.slo,
            }
            for p in n.pieces.values()
        ]
        gpus.append(
            {
                "gpu": n.gpu,
                "gpu_type": n.gclass.gpu_type,
                "duty_cycle_ms": n.duty,
                "allocations": allocs,
            }
        )
    # One validation of the whole plan: building 10,000 Allocations one by one took a
    # tenth of a 10,000-session plan's time.
    return Plan.model_validate({"gpus": gpus, "unplaced": _merge_unplaced(unplaced)})


def _next_id(
    c: GpuClass,
    taken: set[str],
    counters: dict[GpuClass, int],
    pools: dict[GpuClass, list[str]],
    reserved: set[str],
) -> str:
    if c.ids is not None:
        free = pools.setdefault(c, [i for i in c.ids if i not in taken])
        while free:
            gid = free.pop(0)
            if gid not in taken:
                return gid
        raise PlanningError(f"more nodes than {c.gpu_type} GPUs")  # fit_fleet prevents it
    i = counters.get(c, 0)
    while f"{c.gpu_type}-{i}" in taken or f"{c.gpu_type}-{i}" in reserved:
        i += 1
    counters[c] = i + 1
    return f"{c.gpu_type}-{i}"


def _merge_unplaced(items: list[Unplaced]) -> list[Unplaced]:
    out: dict[str, Unplaced] = {}
    for u in items:
        if u.session in out:
            out[u.session].rate += u.rate
        else:
            out[u.session] = u.model_copy()
    return list(out.values())
