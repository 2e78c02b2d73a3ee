"""Which queries the router can run: the plan's queries (`plan.queries`, Nexus §6.2 budgets)
as `router.query_exec.QuerySpec`s, with each stage's least latency from the profiles.

A query no plan ever named is 404; one a plan named whose stage sessions are not
all placed now is 503 `no_placement` (as for a model, `router.routing`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from control.types import Plan, QueryPlan
from model_repo_tools.profiles import LatencyCurve
from router.http_errors import RETRY, HttpError
from router.query_exec import QuerySpec, StageSpec


class QueryTable:
    """query id → QuerySpec of the plan running now; `update` with each new plan."""

    def __init__(self, plan: Plan, curves: Mapping[tuple[str, str], LatencyCurve]) -> None:
        self.curves = curves
        self.known: set[str] = set()  # every query any plan named
        self.specs: dict[str, QuerySpec] = {}
        self.missing: dict[str, str] = {}  # query → a stage session the plan does not place
        self.plans: dict[str, QueryPlan] = {}
        self.update(plan)

    def update(self, plan: Plan) -> None:
        types: dict[str, set[str]] = {}  # session → the GPU types it runs on
        for g in plan.gpus:
            for a in g.allocations:
                types.setdefault(a.session, set()).add(g.gpu_type)
        specs, missing = {}, {}
        for q in plan.queries:
            gone = [s.session for s in q.stages if s.session not in types]
            if gone:
                missing[q.id] = gone[0]
                continue
            stages = tuple(
                StageSpec(
                    s.id,
                    s.model,
                    s.session,
                    s.budget_ms,
                    s.after,
                    self._least(s.model, types[s.session]),
                )
                for s in q.stages
            )
            specs[q.id] = QuerySpec(q.id, q.slo_ms, stages)
        self.specs, self.missing = specs, missing
        self.plans = {q.id: q for q in plan.queries}
        self.known |= set(self.plans)

    def _least(self, model: str, gpu_types: set[str]) -> float:
        best = math.inf
        for t in gpu_types:
            curve = self.curves.get((model, t))
            if curve is not None:
                best = min(best, curve.latency(1))
        return 0.0 if math.isinf(best) else best

    def get(self, query: str) -> QuerySpec:
        """The query's spec; HttpError 404 if no plan named it, 503 if not placed now."""
        spec = self.specs.get(query)
        if spec is not None:
            return spec
        if query in self.known:
            why = self.missing.get(query)
            detail = f"its stage session '{why}' is not placed" if why else "no plan runs it now"
            raise HttpError(
                503,
                f"query '{query}' has no placement now: {detail}",
                headers=RETRY,
                reason="no_placement",
            )
        raise HttpError(404, f"unknown query '{query}': no plan names it")
