"""The control plane's HTTP API (FastAPI): plan, fleet and its health, profiles, sessions, metrics.

Reads are open; every write needs `Authorization: Bearer <token>` (the token
from TNX_ADMIN_TOKEN or `--token`), except routers' reports of failed batches
(`POST /v1/fleet/reports`), which only ask for a probe. Routers started with
`--control URL` poll `GET /v1/plan?router=<their URL>` and switch when its
`revision` or its GPUs' owners change; the poll is their registration and
heartbeat (`control.ownership`): each planned GPU's `owner` is the one live
router that dispatches to it. `GET /v1/routers` lists the live routers.
`GET /v1/queries` lists the queries with the budgets query analysis last gave
their stages (the plan carries them too, for the routers).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from control.service import ControlPlane
from control.types import Session
from tnx.errors import UserInputError


class FleetReport(BaseModel):
    """A router's view of one GPU (`POST /v1/fleet/reports`)."""

    model_config = ConfigDict(extra="ignore")

    gpu: str = Field(min_length=1)
    healthy: bool
    error: str = ""


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    slo_ms: float = Field(gt=0)
    rate: float = Field(ge=0)


def _dump(model: BaseModel | None) -> dict[str, Any] | None:
    return None if model is None else model.model_dump(mode="json", exclude_none=True)


def create_app(cp: ControlPlane, token: str | None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await cp.start()
        try:
            yield
        finally:
            await cp.stop()

    app = FastAPI(title="tnx control plane", lifespan=lifespan)

    def admin(authorization: str | None = Header(default=None)) -> None:
        if not token:
            raise HTTPException(
                403,
                "writes are disabled: no admin token is configured (TNX_ADMIN_TOKEN or --token)",
            )
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given, token):
            raise HTTPException(401, "missing or wrong admin token (Authorization: Bearer …)")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": err.detail}, status_code=err.status_code)

    @app.exception_handler(UserInputError)
    async def _user(request: Request, err: UserInputError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/v1/plan")
    async def plan(router: str | None = None) -> dict[str, Any]:
        if router:
            cp.register(router)
            if cp.routers.settling(cp.clock.now()):
                raise HTTPException(503, "registering routers: poll again")
        rec = cp.current
        if rec is None:
            raise HTTPException(503, "no plan applied yet")
        body = rec.plan.model_dump(mode="json")
        owners = cp.owners()
        for g in body["gpus"]:
            if g["gpu"] in owners:
                g["owner"] = owners[g["gpu"]]
        body.update(revision=rec.revision, applied_at=rec.applied_at, reason=rec.reason)
        return body

    @app.get("/v1/routers")
    async def routers() -> dict[str, Any]:
        now = cp.clock.now()
        owners = cp.owners()
        alone = [g.gpu for g in cp.current.plan.gpus] if cp.current and not owners else []
        return {
            "routers": [
                {
                    "url": r,
                    "last_seen_s": round(now - cp.routers.heartbeats[r], 3),
                    "gpus": sorted(g for g, o in owners.items() if o == r) or alone,
                }
                for r in cp.routers.live(now)
            ],
            "fixed": cp.sampler.fixed,
        }

    @app.get("/v1/plan/history")
    async def history() -> list[dict[str, Any]]:
        return [
            {
                "revision": r.revision,
                "applied_at": r.applied_at,
                "reason": r.reason,
                "gpus": len(r.plan.gpus),
                "loads": r.loads,
                "unloads": r.unloads,
            }
            for r in cp.history
        ]

    @app.get("/v1/fleet")
    async def fleet() -> dict[str, Any]:
        return cp.fleet.model_dump(mode="json", exclude_none=True)

    @app.get("/v1/fleet/health")
    async def fleet_health() -> dict[str, Any]:
        return {"servers": cp.health.snapshot(cp.clock.now())}

    @app.post("/v1/fleet/reports", status_code=202)
    async def fleet_report(body: FleetReport) -> dict[str, Any]:
        """Open to routers without the admin token: a report only makes the control plane
        probe the server itself, never takes it out on its own."""
        probing = cp.report(body.gpu, body.healthy, body.error)
        return {"probing": probing}

    @app.get("/v1/profiles")
    async def profiles() -> dict[str, Any]:
        return cp.profiles.model_dump(mode="json")

    @app.get("/v1/sessions")
    async def sessions() -> dict[str, Any]:
        observed, planned, allocated = (cp.observed_rates(), cp.planned_rates, cp.allocated_rates())
        return {
            "sessions": [
                {
                    **s.model_dump(mode="json"),
                    "observed_rate": observed.get(s.id),
                    "planned_rate": planned.get(s.id),
                    "allocated_rate": allocated.get(s.id, 0.0),
                }
                for s in cp.sessions()
            ]
        }

    @app.get("/v1/queries")
    async def queries() -> dict[str, Any]:
        plans = {q.id: q for q in cp.query_plans}
        return {
            "queries": [
                {**q.model_dump(mode="json"), "plan": _dump(plans.get(q.id))}
                for q in cp.store.queries.all()
            ]
        }

    @app.put("/v1/sessions/{session_id}", dependencies=[Depends(admin)])
    async def put_session(session_id: str, body: SessionBody) -> dict[str, Any]:
        session = Session(id=session_id, **body.model_dump())
        cp.put_session(session)
        return session.model_dump(mode="json")

    @app.delete("/v1/sessions/{session_id}", dependencies=[Depends(admin)])
    async def delete_session(session_id: str) -> Response:
        if not cp.delete_session(session_id):
            raise HTTPException(404, f"no session {session_id!r}")
        return Response(status_code=204)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(cp.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(status_code=200 if cp.current is not None else 503)

    return app
