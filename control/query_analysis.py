"""Query analysis, Nexus §6.2: split a query's SLO across its stages to minimise GPUs.

A query is a tree of stages: each stage runs after its parent and receives
`fanout` requests per parent request, so its rate is the query's rate times the
fanouts on its path. A request's latency is the sum of its stages' budgets along
a root-to-leaf path, which must stay within the query's SLO. A dynamic program
over budgets discretised in `steps` equal parts of the SLO finds the split of
least total GPU need:

    f(k, T) = min over t ≤ T of need_k(t) + Σ_{children c} f(c, T − t)

The stages then become ordinary sessions `<query>/<stage>` with their share as SLO,
and the plan routers fetch carries each query with its stages' budgets (`QueryPlan`),
so a router can run the query end to end (`POST /v1/queries/{query}`). The control
plane re-runs the analysis at each re-plan with the rates it observed per stage
(`analyse`): the split follows the load, and with it the budgets it publishes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from control.problem import TableCache
from control.types import Query, QueryPlan, Session, Stage, StagePlan, Workload
from model_repo_tools.profiles import LatencyCurve

NeedFn = Callable[[Stage, float, float], float]  # (stage, rate, budget ms) → GPUs
STEPS = 40


def session_id(q: Query, stage: Stage) -> str:
    return f"{q.id}/{stage.id}"


def stage_rates(q: Query, observed: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each stage's rate: `observed[stage id]` where given, else its parent's times its
    fanout (the root's: the query's rate)."""
    by_id = {s.id: s for s in q.stages}
    rates: dict[str, float] = dict(observed or {})

    def rate(sid: str) -> float:
        if sid not in rates:
            s = by_id[sid]
            rates[sid] = q.rate if s.after is None else rate(s.after) * s.fanout
        return rates[sid]

    for s in q.stages:
        rate(s.id)
    return rates


def _children(q: Query) -> dict[str | None, list[Stage]]:
    kids: dict[str | None, list[Stage]] = {}
    for s in q.stages:
        kids.setdefault(s.after, []).append(s)
    return kids


def split_slo(
    q: Query, need: NeedFn, steps: int = STEPS, rates: Mapping[str, float] | None = None
) -> tuple[dict[str, float], float]:
    """Budget per stage (ms) and the total need it achieves (inf if none is feasible);
    `rates`: stage id → rate, where known (the rest from `stage_rates`)."""
    kids = _children(q)
    rates = stage_rates(q, rates)
    unit = q.slo_ms / steps
    # f[k][T]: least need of k's subtree within T units; pick[k][T]: k's own units.
    f: dict[str, list[float]] = {}
    pick: dict[str, list[int]] = {}

    def solve(s: Stage) -> None:
        for c in kids.get(s.id, []):
            solve(c)
        own = [math.inf] + [need(s, rates[s.id], j * unit) for j in range(1, steps + 1)]
        fs, ps = [math.inf] * (steps + 1), [0] * (steps + 1)
        for total in range(1, steps + 1):
            for j in range(1, total + 1):
                v = own[j] + sum(f[c.id][total - j] for c in kids.get(s.id, []))
                if v < fs[total]:
                    fs[total], ps[total] = v, j
        f[s.id], pick[s.id] = fs, ps

    root = kids[None][0]
    solve(root)
    budgets: dict[str, float] = {}

    def assign(s: Stage, total: int) -> None:
        j = pick[s.id][total]
        budgets[s.id] = j * unit
        for c in kids.get(s.id, []):
            assign(c, total - j)

    best = f[root.id][steps]
    if math.isinf(best):
        return even_split(q), math.inf
    assign(root, steps)
    return budgets, best


def even_split(q: Query) -> dict[str, float]:
    """Each stage gets SLO / (stages on the deepest path): the naive split."""
    by_id = {s.id: s for s in q.stages}

    def depth(s: Stage) -> int:
        return 1 if s.after is None else 1 + depth(by_id[s.after])

    deepest = max(depth(s) for s in q.stages)
    return {s.id: q.slo_ms / deepest for s in q.stages}


def query_sessions(q: Query, budgets: dict[str, float]) -> list[Session]:
    rates = stage_rates(q)
    return [
        Session(id=session_id(q, s), model=s.model, slo_ms=budgets[s.id], rate=rates[s.id])
        for s in q.stages
    ]


def query_plan(q: Query, budgets: Mapping[str, float]) -> QueryPlan:
    """The query as routers run it: its stages, their sessions and budgets."""
    return QueryPlan(
        id=q.id,
        slo_ms=q.slo_ms,
        rate=q.rate,
        stages=[
            StagePlan(
                id=s.id,
                model=s.model,
                session=session_id(q, s),
                budget_ms=budgets[s.id],
                after=s.after,
                fanout=s.fanout,
            )
            for s in q.stages
        ],
    )


def need_on(curves: Mapping[tuple[str, str], LatencyCurve], gpu_types: Iterable[str]) -> NeedFn:
    """A stage's GPU need on the cheapest of `gpu_types` (inf where no profile serves it)."""
    tables = TableCache(curves)
    types = sorted(set(gpu_types))

    def need(stage: Stage, rate: float, budget: float) -> float:
        best = math.inf
        for ty in types:
            t = tables.get(stage.model, ty)
            if t is not None:
                best = min(best, t.need(rate, budget))
        return best

    return need


@dataclass(slots=True)
class Analysis:
    sessions: list[Session]  # the sessions given, the stage sessions' SLOs re-split
    plans: list[QueryPlan]
    changed: list[Session]  # the stage sessions whose budget moved


def analyse(queries: Sequence[Query], sessions: Sequence[Session], need: NeedFn) -> Analysis:
    """Re-run the split of each query for the rates its stage sessions are planned at.

    A query whose split is infeasible at these rates keeps the budgets it had (its
    sessions' SLOs); so does a query whose stage sessions are not all in `sessions`.
    """
    by_id = {s.id: s for s in sessions}
    out = dict(by_id)
    plans, changed = [], []
    for q in queries:
        mine = {st.id: by_id[session_id(q, st)] for st in q.stages if session_id(q, st) in by_id}
        if len(mine) < len(q.stages):
            continue
        current = {sid: s.slo_ms for sid, s in mine.items()}
        budgets, total = split_slo(q, need, rates={sid: s.rate for sid, s in mine.items()})
        if math.isinf(total):
            budgets = current
        for st in q.stages:
            sid = session_id(q, st)
            if abs(budgets[st.id] - current[st.id]) > 1e-9:
                out[sid] = out[sid].model_copy(update={"slo_ms": budgets[st.id]})
                changed.append(out[sid])
        plans.append(query_plan(q, budgets))
    return Analysis([out[s.id] for s in sessions], plans, changed)


def workload_query_plans(workload: Workload, sessions: Iterable[Session]) -> list[QueryPlan]:
    """The workload's queries with the budgets their stage sessions were planned at (e.g. a
    `Schedule`'s sessions), for a plan file's `queries`; a query missing a stage is left out."""
    slo = {s.id: s.slo_ms for s in sessions}
    out = []
    for q in workload.queries:
        ids = {st.id: session_id(q, st) for st in q.stages}
        if all(sid in slo for sid in ids.values()):
            out.append(query_plan(q, {st: slo[sid] for st, sid in ids.items()}))
    return out
