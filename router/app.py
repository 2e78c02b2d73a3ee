"""The router's HTTP API: Triton's KServe v2 protocol in front of the batching policy (FastAPI).

`POST /v2/models/{model}/infer` decodes a KServe v2 body (JSON or Triton's
binary tensor extension), checks it against the model's metadata, picks the
session (`X-SLO-Ms` header, else the model's only session), and waits for the
policy's one outcome: the request's slice of a batch (200), or a drop (503 with
`{"error", "reason"}` and Retry-After). Malformed input is 400, an unknown model
404, an oversized body 413. Every accepted request is answered exactly once,
also at shutdown (`shutting_down`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from control.types import Plan
from exporters.errors import ServerError
from model_repo_tools.fleet import Fleet
from model_repo_tools.profiles import LatencyCurve
from router import kserve
from router.driver import AsyncRouter, Backend
from router.metrics import RouterMetrics
from router.policy import BatchPolicy
from router.types import NO_SESSION, REJECTED, TOO_LARGE, Answered, DropMode

SLO_HEADER = "x-slo-ms"
DEFAULT_MAX_BODY = 64 * 1024 * 1024
_CLIENT_FAULTS = {NO_SESSION: 404, TOO_LARGE: 400, REJECTED: 400}


@dataclass(slots=True)
class ModelInfo:
    metadata: dict[str, Any]
    max_batch_size: int
    inputs: list[kserve.TensorSpec]
    output_names: list[str]


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return Response(
        kserve.error_body(message, **extra),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


class RouterService:
    """The live router: policy + asyncio driver + backend, and what the HTTP layer needs."""

    def __init__(
        self,
        plan: Plan,
        fleet: Fleet,
        curves: dict[tuple[str, str], LatencyCurve],
        backend: Backend | None = None,
        drop: DropMode = "early",
        max_body_bytes: int = DEFAULT_MAX_BODY,
        reserve_ms: float = 2.0,
    ) -> None:
        self.plan, self.fleet, self.curves = plan, fleet, curves
        self.drop = drop
        self.max_body_bytes = max_body_bytes
        # Time an answer needs after the policy is done with it (encode, write, the
        # client's read), kept back from every deadline.
        self.reserve_ms = reserve_ms
        self.metrics = RouterMetrics()
        self._backend = backend
        self._models: dict[str, ModelInfo] = {}
        self._meta_lock = asyncio.Lock()
        self.router: AsyncRouter | None = None
        self.started = time.time()
        self.revision = 0  # the control plane's plan revision this router runs
        check_plan_against_fleet(plan, fleet)

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._backend is None:
            from router.triton_backend import TritonBackend

            self._backend = TritonBackend(self.fleet)
        health = getattr(self._backend, "healthy", None)
        policy = BatchPolicy(self.plan, self.curves, drop=self.drop)
        self.router = AsyncRouter(
            policy, self._backend, health=health, on_event=self.metrics.on_event
        )

    async def stop(self) -> None:
        if self.router is not None:
            await self.router.shutdown()
        close = getattr(self._backend, "close", None)
        if close is not None:
            await close()

    def switch_plan(
        self, plan: Plan, fleet: Fleet | None = None, revision: int | None = None
    ) -> None:
        """Adopt a new plan (and fleet) without losing or duplicating queued requests."""
        fleet = fleet or self.fleet
        check_plan_against_fleet(plan, fleet)
        if fleet is not self.fleet and hasattr(self._backend, "set_fleet"):
            self._backend.set_fleet(fleet)
        assert self.router is not None
        self.router.switch_plan(plan)
        self.plan, self.fleet = plan, fleet
        if revision is not None:
            self.revision = revision

    # ---- sessions and models --------------------------------------------------------

    def sessions_of(self, model: str) -> dict[str, float]:
        assert self.router is not None
        policy = self.router.policy
        return {sid: policy.slo(sid) or 0.0 for sid, m in policy.sessions().items() if m == model}

    def pick_session(self, model: str, slo_header: str | None) -> str:
        sessions = self.sessions_of(model)
        if not sessions:
            raise HttpError(404, f"unknown model '{model}': no session of the plan serves it")
        listed = ", ".join(f"{slo:g} ms" for slo in sorted(sessions.values()))
        if slo_header is None:
            if len(sessions) == 1:
                return next(iter(sessions))
            raise HttpError(
                400,
                f"model '{model}' has several sessions ({listed}): "
                "choose one with the X-SLO-Ms header",
            )
        try:
            slo = float(slo_header)
        except ValueError:
            raise HttpError(400, f"X-SLO-Ms {slo_header!r}: not a number") from None
        for sid, s in sessions.items():
            if abs(s - slo) < 1e-6:
                return sid
        raise HttpError(
            400,
            f"model '{model}' has no session with an SLO of {slo:g} ms (its sessions: {listed})",
        )

    def gpus_of(self, model: str) -> list[str]:
        return [g.gpu for g in self.plan.gpus if any(a.model == model for a in g.allocations)]

    async def model_info(self, model: str) -> ModelInfo:
        info = self._models.get(model)
        if info is not None:
            return info
        async with self._meta_lock:
            if model in self._models:
                return self._models[model]
            errors = []
            for gpu in self.gpus_of(model):
                try:
                    meta, mbs = await self._backend.metadata(gpu, model)  # type: ignore[union-attr]
                except ServerError as err:
                    errors.append(str(err))
                    continue
                inputs, outputs = kserve.specs_from_metadata(meta, mbs)
                info = ModelInfo(meta, mbs, inputs, [o.name for o in outputs])
                self._models[model] = info
                return info
        raise HttpError(
            503,
            f"model '{model}': no server answered its metadata: "
            + "; ".join(errors or ["no GPU of the plan holds it"]),
            reason="no_server",
        )

    # ---- inference ------------------------------------------------------------------

    async def infer(
        self, model: str, body: bytes, headers: Any, arrival: float | None = None
    ) -> Response:
        """`arrival`: when the request reached the router, on the router's clock."""
        assert self.router is not None
        session = self.pick_session(model, headers.get(SLO_HEADER))
        info = await self.model_info(model)
        header_length = kserve.parse_header_length(headers.get(kserve.INFERENCE_HEADER))
        req = kserve.decode_request(body, header_length)
        n = kserve.validate_inputs(
            req, info.inputs, outputs=info.output_names, max_batch_size=info.max_batch_size
        )
        self.metrics.on_arrival(session)
        request = self.router.request(session, req.inputs, n or 1, arrival, self.reserve_ms)
        outcome = await self.router.submit(request)
        self.metrics.on_outcome(outcome)
        if isinstance(outcome, Answered):
            body_out, extra = kserve.encode_response(
                model, str(info.metadata.get("versions", ["1"])[0]), outcome.result, req
            )
            return Response(body_out, status_code=200, headers=extra)
        status = _CLIENT_FAULTS.get(outcome.reason, 503)
        message = _drop_message(model, outcome.reason, outcome.detail)
        headers_out = {"Retry-After": "1"} if status == 503 else None
        return _error(status, message, headers_out, reason=outcome.reason)


def _drop_message(model: str, reason: str, detail: str) -> str:
    text = {
        "deadline": "cannot be served within its SLO",
        "expired": "its deadline passed while it waited",
        "server_down": "its server failed and no other could serve it in time",
        "no_server": "no server of its session is up",
        "shutting_down": "the router is shutting down",
        NO_SESSION: "its session left the plan",
        TOO_LARGE: "it carries more samples than any planned batch can hold",
        REJECTED: "the server refused its inputs",
    }.get(reason, reason)
    return f"request to '{model}' not served: {text}" + (f" ({detail})" if detail else "")


def check_plan_against_fleet(plan: Plan, fleet: Fleet) -> None:
    known = fleet.by_id()
    for g in plan.gpus:
        if g.gpu not in known:
            from exporters.errors import ContractError

            raise ContractError(
                f"plan gpu {g.gpu!r} is not in the fleet "
                f"(fleet has {', '.join(sorted(known)) or 'no gpus'})"
            )


def create_app(service: RouterService, control: str | None = None) -> FastAPI:
    """The ASGI app; with `control`, it follows that control plane's plan revisions."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        follower = None
        if control is not None:
            from router.follow import follow

            follower = asyncio.get_running_loop().create_task(follow(service, control))
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            await service.stop()

    app = FastAPI(title="tnx router", lifespan=lifespan)
    app.state.service = service
    from router import extensions, openapi  # extensions imports this module

    extensions.install(app, service)  # config, stats, versions: before /v2/models/{model}
    openapi.install(app)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, err: HttpError) -> Response:
        return _error(err.status, err.message, **err.extra)

    @app.exception_handler(kserve.BadRequest)
    async def _bad_request(request: Request, err: kserve.BadRequest) -> Response:
        return _error(400, str(err))

    async def _infer(model: str, request: Request) -> Response:
        # The deadline counts from here: reading and decoding the body is part of the SLO.
        arrival = service.router.now() if service.router is not None else None
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > service.max_body_bytes:
            return _error(
                413,
                f"request body of {int(length)} bytes exceeds the limit of "
                f"{service.max_body_bytes} bytes",
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > service.max_body_bytes:
                return _error(
                    413, f"request body exceeds the limit of {service.max_body_bytes} bytes"
                )
        return await service.infer(model, bytes(body), request.headers, arrival)

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        return await _infer(model, request)

    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def infer_version(model: str, version: str, request: Request) -> Response:
        return await _infer(model, request)

    @app.get("/v2/models/{model}")
    async def metadata(model: str) -> JSONResponse:
        if not service.sessions_of(model):
            raise HttpError(404, f"unknown model '{model}'")
        return JSONResponse((await service.model_info(model)).metadata)

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> Response:
        assert service.router is not None
        up = [g for g in service.gpus_of(model) if service.router.policy.is_up(g)]
        return Response(status_code=200 if up else 503)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        r = service.router
        ok = (
            r is not None
            and not r.policy.closed
            and any(r.policy.is_up(g) for g in r.policy.gpus())
        )
        return Response(status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse(
            {
                "name": "tnx-router",
                "version": "0.1.0",
                "extensions": ["binary_tensor_data", "model_configuration", "statistics"],
            }
        )

    @app.get("/v1/sessions")
    async def sessions() -> JSONResponse:
        """Per-session arrival counts (cumulative) for the control plane's rate estimates."""
        assert service.router is not None
        policy = service.router.policy
        counts = service.metrics.arrival_counts
        return JSONResponse(
            {
                "time": time.time(),
                "plan_revision": service.revision,
                "sessions": [
                    {
                        "id": sid,
                        "model": model,
                        "slo_ms": policy.slo(sid),
                        "arrivals": int(counts.get(sid, 0)),
                        "queued": policy.queued(sid),
                    }
                    for sid, model in policy.sessions().items()
                ],
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
