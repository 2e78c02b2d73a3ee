"""The router's HTTP API: Triton's KServe v2 protocol in front of the batching policy (FastAPI).

`POST /v2/models/{model}/infer` decodes a KServe v2 body (JSON or Triton's
binary tensor extension), checks it against the model's metadata, picks the
session (`X-SLO-Ms` header, else the model's only session), and waits for the
policy's one outcome: the request's slice of a batch (200), or a drop (503 with
`{"error", "reason"}` and Retry-After). Malformed input is 400, a model no plan
knows 404, a known model with no placement now 503, an oversized body 413. Every
accepted request is answered exactly once, also at shutdown (`shutting_down`).

With many routers, each batches only for the GPUs the plan says it owns
(`router.ownership`); a request for a session none of whose GPUs it owns goes,
body unread by the policy, to an owner with its budget left (`router.forward`).

The infer route is the hot path, so it is a plain Starlette endpoint (no
dependency injection) that decides in the cheapest order: the session from
the URL and `X-SLO-Ms`, the body size from `Content-Length`, then the policy's
`admit` (would the queue ahead make it late?) — all before the body is read —
and only then reads, decodes and queues it. Under overload most requests are
answered 503 from their headers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from control.types import Plan
from model_repo_tools.fleet import Fleet
from model_repo_tools.profiles import LatencyCurve
from router import http_errors, kserve
from router.backend import Backend
from router.driver import MIN_GRACE_MS, AsyncRouter, Event
from router.forward import Forwarder, budget_ms
from router.http_errors import RETRY, HttpError, error_body, no_server
from router.infer_route import ClientGone, InferHeaders, Receive, Reply, read_body, serve_infer
from router.metrics import RouterMetrics
from router.model_schema import TensorSpec, specs_from_metadata, validate_inputs
from router.ownership import Share
from router.policy import BatchPolicy
from router.queries import QueryTable
from router.routing import SessionTable, session_rows
from router.types import Answered, DropMode
from tnx.errors import ContractError, ServerError

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024 * 1024
# Requests submitted and not yet answered, beyond which new ones are refused at the
# door whatever the policy says: a bound on the memory and event-loop work that a
# flood of requests can pin in the HTTP layer.
DEFAULT_MAX_PENDING = 4096


@dataclass(slots=True)
class ModelInfo:
    metadata: dict[str, Any]
    max_batch_size: int
    inputs: list[TensorSpec]
    output_names: list[str]
    version: str = "1"


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return Response(
        error_body(message, **extra),
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
        max_pending: int = DEFAULT_MAX_PENDING,
        grace_ms: float = MIN_GRACE_MS,
        advertise: str | None = None,
    ) -> None:
        self.plan, self.fleet, self.curves = plan, fleet, curves
        # The URL other routers forward to, and the name the plan gives this router's GPUs.
        self.advertise = advertise
        self.share = Share.of(plan, advertise)
        self.forwarder = Forwarder()
        # How long a batch may run past its last deadline before its server counts as failed.
        self.grace_ms = grace_ms
        self.drop = drop
        self.max_body_bytes = max_body_bytes
        self.max_pending = max_pending
        # Time an answer needs after the policy is done with it (encode, write, the
        # client's read), kept back from every deadline.
        self.reserve_ms = reserve_ms
        self.metrics = RouterMetrics()
        # Hooks that see the driver's events besides the metrics (e.g. health reports).
        self.listeners: list[Callable[[float, Event], None]] = []
        self._backend = backend
        self._models: dict[str, ModelInfo] = {}
        self._meta_lock = asyncio.Lock()
        self.router: AsyncRouter | None = None
        self.started = time.time()
        self.revision = 0  # the control plane's plan revision this router runs
        check_plan_against_fleet(plan, fleet)
        self.sessions = SessionTable(plan)
        self.queries = QueryTable(plan, curves)  # `POST /v1/queries/{query}`: router.query_route

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._backend is None:
            from router.triton_backend import TritonBackend

            self._backend = TritonBackend(self.fleet)
        policy = BatchPolicy(self.share.local, self.curves, drop=self.drop)
        self.router = AsyncRouter(
            policy,
            self._backend,
            health=self._health_probe,
            on_event=self._event_hook(),
            grace_ms=self.grace_ms,
        )
        router = self.router
        self.metrics.watch_latency(lambda: router.policy.latency.corrections(router.now()))

    def _event_hook(self) -> Callable[[float, Event], None]:
        hooks = [self.metrics.on_event, *self.listeners]
        if len(hooks) == 1:
            return hooks[0]  # the usual case: no extra call per event

        def each(now: float, event: Event) -> None:
            for hook in hooks:
                try:
                    hook(now, event)
                except Exception:  # one broken hook must not silence the others
                    log.exception("event hook %r failed", hook)

        return each

    async def _health_probe(self, gpu: str) -> bool:
        """The driver's probe of a down GPU: its server is live and every model the current
        plan runs on that GPU ready."""
        return await self.backend.ready(gpu, self.models_on(gpu))

    @property
    def backend(self) -> Backend:
        """The backend (a TritonBackend of the fleet unless one was given), once started."""
        assert self._backend is not None, "RouterService.start() first"
        return self._backend

    def models_on(self, gpu: str) -> list[str]:
        """The models the current plan runs on `gpu`."""
        models = {a.model for g in self.plan.gpus if g.gpu == gpu for a in g.allocations}
        return sorted(models)

    async def stop(self) -> None:
        if self.router is not None:
            await self.router.shutdown()
        if self._backend is not None:
            await self._backend.close()
        await self.forwarder.close()

    def switch_plan(
        self, plan: Plan, fleet: Fleet | None = None, revision: int | None = None
    ) -> None:
        """Adopt a new plan (and fleet) without losing or duplicating queued requests."""
        fleet = fleet or self.fleet
        check_plan_against_fleet(plan, fleet)
        if fleet is not self.fleet:
            self.backend.set_fleet(fleet)
        assert self.router is not None
        share = Share.of(plan, self.advertise)
        self.router.switch_plan(share.local)
        self.plan, self.fleet, self.share = plan, fleet, share
        self.sessions.update(plan)
        self.queries.update(plan)
        if revision is not None:
            self.revision = revision

    # ---- sessions and models --------------------------------------------------------

    def served(self, model: str) -> dict[float, str]:
        """{SLO: session} of `model` now (`SessionTable.served`: HttpError 404 or 503)."""
        return self.sessions.served(model)

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
                    meta, mbs = await self.backend.metadata(gpu, model)
                except ServerError as err:
                    errors.append(str(err))
                    continue
                inputs, outputs = specs_from_metadata(meta, mbs)
                version = str((meta.get("versions") or ["1"])[0])
                info = ModelInfo(meta, mbs, inputs, [o.name for o in outputs], version)
                self._models[model] = info
                return info
        raise no_server(model, "metadata", errors)

    # ---- inference ------------------------------------------------------------------

    async def infer(self, model: str, headers: InferHeaders, receive: Receive) -> Reply:
        """One infer request: decide from its headers, then read, decode, queue and answer."""
        router = self.router
        assert router is not None
        # The deadline counts from here: reading and decoding the body is part of the SLO.
        arrival = router.now()
        session, slo = self.sessions.pick(
            model, None if headers.slo_ms is None else headers.slo_ms.decode("latin-1")
        )
        length = headers.content_length
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return Reply.of(http_errors.too_large(self.max_body_bytes, int(length)))
        if headers.deadline_ms is not None:  # forwarded by another router: its deadline holds
            if session not in self.share.here:  # ownership moved; never forwarded twice
                return _dropped(model, "not_owner", "no GPU of its session is this router's")
            arrival -= slo - budget_ms(headers.deadline_ms)
        else:
            owner = self.share.target(session, arrival)
            if owner is not None:
                deadline = arrival + slo - self.reserve_ms
                return await self._forward(owner, headers, receive, deadline)
        self.metrics.on_arrival(session)
        reason = router.policy.admit(arrival, session, arrival + slo - self.reserve_ms)
        if reason is None and router.pending() >= self.max_pending:
            reason = "overloaded"
        if reason is not None:
            self.metrics.on_refused(session, reason)
            return _dropped(model, reason)
        try:
            body = await read_body(receive, self.max_body_bytes)
        except ClientGone:
            self.metrics.on_refused(session, "client_disconnected")
            raise
        if body is None:
            return Reply.of(http_errors.too_large(self.max_body_bytes))
        info = self._models.get(model) or await self.model_info(model)
        header_length = headers.header_length
        req = kserve.decode_request(
            body,
            None if header_length is None else kserve.parse_header_length(header_length.decode()),
        )
        n = validate_inputs(
            req, info.inputs, outputs=info.output_names, max_batch_size=info.max_batch_size
        )
        r = router.request(session, req.inputs, n or 1, arrival, self.reserve_ms)
        outcome = await router.submit(r)
        self.metrics.on_outcome(outcome)
        if isinstance(outcome, Answered):
            body_out, extra = kserve.encode_response(model, info.version, outcome.result, req)
            return Reply(
                200, body_out, [(k.lower().encode(), v.encode()) for k, v in extra.items()]
            )
        return _dropped(model, outcome.reason, outcome.detail)

    async def _forward(
        self, owner: str, headers: InferHeaders, receive: Receive, deadline: float
    ) -> Reply:
        body = await read_body(receive, self.max_body_bytes)
        if body is None:
            return Reply.of(http_errors.too_large(self.max_body_bytes))
        assert self.router is not None
        budget = deadline - self.router.now()
        return await self.forwarder.forward(owner, headers.path, headers, body, budget)

    def ready(self) -> bool:
        """Whether requests can be served: a GPU of its own up, or an owner to forward to."""
        r = self.router
        if r is None or r.policy.closed:
            return False
        return bool(self.share.remote) or any(r.policy.is_up(g) for g in r.policy.gpus())


def _dropped(model: str, reason: str, detail: str = "") -> Reply:
    status, body, headers = _drop_reply(model, reason, detail)
    return Reply(status, body, list(headers))


@functools.lru_cache(maxsize=1024)
def _drop_reply(model: str, reason: str, detail: str) -> tuple[int, bytes, tuple]:
    # Under overload most answers are these: encode each kind once.
    r = Reply.of(http_errors.dropped(model, reason, detail))
    return r.status, r.body, tuple(r.headers)


def check_plan_against_fleet(plan: Plan, fleet: Fleet) -> None:
    known = fleet.by_id()
    for g in plan.gpus:
        if g.gpu not in known:
            raise ContractError(
                f"plan gpu {g.gpu!r} is not in the fleet "
                f"(fleet has {', '.join(sorted(known)) or 'no gpus'})"
            )


class _RouterApp(FastAPI):
    """FastAPI, with the infer route answered in front of it (router.infer_route)."""

    def __init__(self, infer: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self._infer = infer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not await serve_infer(self._infer, scope, receive, send):
            await super().__call__(scope, receive, send)


def create_app(service: RouterService, control: str | None = None) -> FastAPI:
    """The ASGI app; with `control`, it follows that control plane's plan revisions and
    reports GPU health to it (`router.reports`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        poster = None
        if control is not None:
            from router.reports import ControlPoster, HealthReports

            # Failed batches and GPUs back up, told to the control plane (issue 9).
            poster = ControlPoster(control)
            service.listeners.append(HealthReports(poster).on_event)
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
            if poster is not None:
                await poster.aclose()

    app = _RouterApp(service.infer, title="tnx router", lifespan=lifespan)
    app.state.service = service
    from router import extensions, openapi, query_route  # they import this module

    extensions.install(app, service)  # config, stats, versions: before /v2/models/{model}
    query_route.install(app, service)
    openapi.install(app)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, err: HttpError) -> Response:
        return _error(err.status, err.message, err.headers, **err.extra)

    @app.exception_handler(kserve.BadRequest)
    async def _bad_request(request: Request, err: kserve.BadRequest) -> Response:
        return _error(400, str(err))

    @app.get("/v2/models/{model}")
    async def metadata(model: str) -> JSONResponse:
        service.served(model)
        return JSONResponse((await service.model_info(model)).metadata)

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> Response:
        assert service.router is not None
        service.served(model)  # 404 for a model no plan names, 503 for one not placed now
        if any(service.router.policy.is_up(g) for g in service.gpus_of(model)):
            return Response(status_code=200)
        return _error(503, f"model '{model}': no server of it is up", RETRY, reason="no_server")

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready() else 503)

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
        """Per-session arrival counts (cumulative) for the control plane's rate estimates: of
        the sessions served here (a forwarded request counts where it is served)."""
        assert service.router is not None
        policy = service.router.policy
        rows = session_rows(
            policy.sessions(),
            policy.slo,
            policy.queued,
            service.metrics.arrival_counts,
            service.sessions,
        )
        return JSONResponse(
            {
                "time": time.time(),
                "plan_revision": service.revision,
                "forwarded": service.forwarder.forwarded,
                "forward_failed": service.forwarder.failed,
                "sessions": rows,
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
