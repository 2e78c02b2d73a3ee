"""Triton's HTTP routes beside inference, as tools call them before and around a run.

perf_analyzer reads `GET /v2/models/{m}` and `GET /v2/models/{m}/config` before it
starts, and diffs `GET /v2/models/{m}/stats` around each measurement; Triton's own
HTTP clients call the versioned forms. Served here:

- model configuration (server/docs/protocol/extension_model_configuration.md): the
  server's config, with `max_batch_size` what the router serves (the largest batch a
  planned GPU of the model can run: its profile's, capped by the server's) and no
  `dynamic_batching` (the router batches, Triton runs what it is sent);
- statistics (extension_statistics.md): `router.stats`, the router's own counts;
- versioned metadata and readiness.

A model no plan names is 404, a version the model's servers do not report 404; a
model the plan places nowhere now, or whose servers all fail to answer, 503
(`{"error", "reason"}`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from router.http_errors import HttpError, error_body, no_server
from tnx.errors import ServerError

if TYPE_CHECKING:
    from router.app import ModelInfo, RouterService


def versions(info: ModelInfo) -> list[str]:
    """The versions a model's metadata lists (Triton lists the ones it serves)."""
    return [str(v) for v in info.metadata.get("versions") or ["1"]]


def install(app: FastAPI, service: RouterService) -> None:
    """Add the routes to `app` (before its own, see `routes`), and answer paths and methods
    no route takes with KServe's error body instead of FastAPI's `{"detail": ...}`."""
    app.include_router(routes(service))

    @app.exception_handler(HTTPException)
    async def _unrouted(request: Request, err: HTTPException) -> Response:
        return Response(
            error_body(str(err.detail)),
            status_code=err.status_code,
            media_type="application/json",
            headers=err.headers,
        )


def routes(service: RouterService) -> APIRouter:
    """The routes, bound to `service`; include them before `GET /v2/models/{model}`, which
    would otherwise take `/v2/models/stats` for a model named `stats`."""
    api = APIRouter()

    async def served(model: str, version: str | None) -> tuple[ModelInfo, str]:
        service.served(model)  # 404 if no plan names it, 503 if none places it now
        info = await service.model_info(model)
        listed = versions(info)
        if version is None:
            return info, listed[0]
        if version not in listed:
            raise HttpError(
                404, f"model '{model}' has no version '{version}' (it serves {', '.join(listed)})"
            )
        return info, version

    async def config(model: str, version: str | None) -> JSONResponse:
        await served(model, version)
        return JSONResponse(await model_config(service, model))

    async def stats(model: str, version: str | None) -> JSONResponse:
        _, v = await served(model, version)
        entry = service.metrics.stats.model_json(model, v, _sessions(service))
        return JSONResponse({"model_stats": [entry]})

    @api.get("/v2/models/stats")
    async def all_stats() -> JSONResponse:
        owners = _sessions(service)
        entries = []
        for model in sorted(set(owners.values())):
            try:  # Triton lists the models that are ready; one no server describes is not
                info = await service.model_info(model)
            except HttpError:
                continue
            entries.append(service.metrics.stats.model_json(model, versions(info)[0], owners))
        return JSONResponse({"model_stats": entries})

    _with_versions(api, "/stats", stats)
    _with_versions(api, "/config", config)

    @api.get("/v2/models/{model}/versions/{version}")
    async def version_metadata(model: str, version: str) -> JSONResponse:
        info, _ = await served(model, version)
        return JSONResponse(info.metadata)

    @api.get("/v2/models/{model}/versions/{version}/ready")
    async def version_ready(model: str, version: str) -> Response:
        # An unknown model or version is the caller's mistake (404); a known one that no
        # server runs now is not ready (503, no body, as `GET /v2/models/{model}/ready`).
        try:
            service.served(model)
        except HttpError as err:
            if err.status == 404:
                raise
            return Response(status_code=503)
        assert service.router is not None
        policy = service.router.policy
        if not any(policy.is_up(g) for g in service.gpus_of(model)):
            return Response(status_code=503)
        try:
            await served(model, version)
        except HttpError as err:
            if err.status == 404:
                raise
            return Response(status_code=503)
        return Response(status_code=200)

    return api


def _with_versions(
    api: APIRouter, suffix: str, answer: Callable[[str, str | None], Awaitable[Response]]
) -> None:
    """`GET /v2/models/{model}{suffix}` and its `/versions/{version}` twin, both answered by
    `answer(model, version)` (version None: the model's first)."""

    async def latest(model: str) -> Response:
        return await answer(model, None)

    async def versioned(model: str, version: str) -> Response:
        return await answer(model, version)

    api.add_api_route(f"/v2/models/{{model}}{suffix}", latest, methods=["GET"])
    api.add_api_route(
        f"/v2/models/{{model}}/versions/{{version}}{suffix}", versioned, methods=["GET"]
    )


async def model_config(service: RouterService, model: str) -> dict[str, Any]:
    """The config of `model` from the first of its planned servers that answers, with
    max_batch_size what the router serves and no dynamic_batching."""
    assert service.router is not None
    policy = service.router.policy
    gpus = sorted(service.gpus_of(model), key=lambda g: not policy.is_up(g))
    errors: list[str] = []
    for gpu in gpus:
        try:
            cfg = await service.backend.model_config(gpu, model)
        except ServerError as err:
            errors.append(str(err))
            continue
        cfg.pop("dynamic_batching", None)
        own = int(cfg.get("max_batch_size", 0))
        largest = served_batch(service, model)
        if own > 0 and largest > 0:
            cfg["max_batch_size"] = min(own, largest)
        return cfg
    raise no_server(model, "config", errors)


def served_batch(service: RouterService, model: str) -> int:
    """The largest batch a planned GPU of `model` can run: its profile's largest size."""
    assert service.router is not None
    latency = service.router.policy.latency
    sizes = [
        curve.max_batch
        for g in service.plan.gpus
        if any(a.model == model for a in g.allocations)
        and (curve := latency.curve(model, g.gpu_type)) is not None
    ]
    return max(sizes, default=0)


def _sessions(service: RouterService) -> dict[str, str]:
    assert service.router is not None
    return service.router.policy.sessions()
