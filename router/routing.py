"""Which session a request to a model joins: the plan's model → {SLO: session} table.

A request names its model in the URL and, when the model has several sessions,
its SLO in the `X-SLO-Ms` header. A model no plan ever named is 404; one a plan
named (placed or listed unplaced) that no session serves now is 503
`no_placement`; an SLO that names no session of the model is 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from control.types import Plan
from router.http_errors import HttpError, no_placement, unknown_model


class SessionTable:
    """model → {SLO ms: session} of the plan running now; `update` with each new plan."""

    def __init__(self, plan: Plan) -> None:
        self._routes: dict[str, dict[float, str]] = {}
        self.by_id: dict[str, tuple[str, float]] = {}  # session → (model, SLO ms)
        self.known_models: set[str] = set()  # every model any plan named
        self.update(plan)

    def update(self, plan: Plan) -> None:
        routes: dict[str, dict[float, str]] = {}
        for g in plan.gpus:
            for a in g.allocations:
                slos = routes.setdefault(a.model, {})
                # A session split over GPUs runs at its tightest SLO (as the policy does).
                old = next((slo for slo, sid in slos.items() if sid == a.session), None)
                if old is None or a.slo_ms < old:
                    slos.pop(old, None)  # type: ignore[arg-type]
                    slos[a.slo_ms] = a.session
        self._routes = routes
        self.by_id = {sid: (m, slo) for m, slos in routes.items() for slo, sid in slos.items()}
        self.known_models |= set(routes)
        self.known_models |= {u.model for u in plan.unplaced if u.model}

    def served(self, model: str) -> dict[float, str]:
        """{SLO: session} of `model` now; HttpError 503 if a plan knew it but none serves it
        now, 404 if no plan ever named it."""
        sessions = self._routes.get(model)
        if sessions:
            return sessions
        if model in self.known_models:
            raise no_placement(model)
        raise unknown_model(model)

    def pick(self, model: str, slo_header: str | None) -> tuple[str, float]:
        """(session, SLO ms) for a request to `model`; HttpError 404/400/503 when none fits."""
        sessions = self.served(model)
        if slo_header is None:
            if len(sessions) == 1:
                slo, sid = next(iter(sessions.items()))
                return sid, slo
            raise HttpError(
                400,
                f"model '{model}' has several sessions ({_listed(sessions)}): "
                "choose one with the X-SLO-Ms header",
            )
        try:
            slo = float(slo_header)
        except ValueError:
            raise HttpError(400, f"X-SLO-Ms {slo_header!r}: not a number") from None
        sid = sessions.get(slo)
        if sid is None:
            for known, candidate in sessions.items():
                if abs(known - slo) < 1e-6:
                    return candidate, known
            raise HttpError(
                400,
                f"model '{model}' has no session with an SLO of {slo:g} ms "
                f"(its sessions: {_listed(sessions)})",
            )
        return sid, slo


def _listed(sessions: dict[float, str]) -> str:
    return ", ".join(f"{slo:g} ms" for slo in sorted(sessions))


def session_rows(
    local: dict[str, str],
    slo: Callable[[str], float | None],
    queued: Callable[[str], int],
    counts: dict[str, int],
    table: SessionTable,
) -> list[dict[str, Any]]:
    """`/v1/sessions` rows: the sessions served here, then those of the plan this router
    counted arrivals of before (its GPUs moved away), so the control plane's rate window
    keeps their growth (none) rather than losing the router's share of the window."""
    rows = [
        {
            "id": sid,
            "model": model,
            "slo_ms": slo(sid),
            "arrivals": int(counts.get(sid, 0)),
            "queued": queued(sid),
        }
        for sid, model in local.items()
    ]
    for sid, n in counts.items():
        if sid not in local and sid in table.by_id:
            model, slo_ms = table.by_id[sid]
            rows.append(
                {"id": sid, "model": model, "slo_ms": slo_ms, "arrivals": int(n), "queued": 0}
            )
    return rows
