"""Query analysis, Nexus §6.2: split a query's SLO across its stages to minimise GPUs.

A query is a tree of stages: each stage runs after its parent and receives
`fanout` requests per parent request, so its rate is the query's rate times the
fanouts on its path. A request's latency is the sum of its stages' budgets along
a root-to-leaf path, which must stay within the query's SLO. A dynamic program
over budgets discretised in `steps` equal parts of the SLO finds the split of
least total GPU need:

    f(k, T) = min over t ≤ T of need_k(t) + Σ_{children c} f(c, T − t)

The stages then become ordinary sessions `<query>/<stage>` with their share as SLO.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from control.types import Query, Session, Stage

NeedFn = Callable[[Stage, float, float], float]  # (stage, rate, budget ms) → GPUs
STEPS = 40


def stage_rates(q: Query) -> dict[str, float]:
    by_id = {s.id: s for s in q.stages}
    rates: dict[str, float] = {}

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


def split_slo(q: Query, need: NeedFn, steps: int = STEPS) -> tuple[dict[str, float], float]:
    """Budget per stage (ms) and the total need it achieves (inf if none is feasible)."""
    kids = _children(q)
    rates = stage_rates(q)
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
        Session(id=f"{q.id}/{s.id}", model=s.model, slo_ms=budgets[s.id], rate=rates[s.id])
        for s in q.stages
    ]
