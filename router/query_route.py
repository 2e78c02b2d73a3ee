"""`POST /v1/queries/{query}`: a query of `workload.json` run end to end under its SLO
(Nexus §6.2), the I/O around the pure `router.query_exec.QueryRun` (docs/queries.md).

The body is a KServe v2 infer request for the root stage's model (JSON, or
Triton's binary tensor extension with `Inference-Header-Content-Length`), checked
against that model as `POST /v2/models/{model}/infer` would check it. Each stage
runs as requests of its session `<query>/<stage>`, submitted straight to the
router's batching policy (the same queues, batches and early drop as every other
request of the session; no HTTP loopback), or, when another router owns the
session's GPUs, forwarded to it with the deadline left. A stage's inputs come from
its parent's outputs (`router.query_wiring`, with fan-out). The answer is one
JSON object: every stage's outputs as a KServe v2 InferenceResponse, keyed by
stage id. A query that can no longer meet its deadline is answered 503
`deadline` (with Retry-After) at once: before its body is read when the SLO is
below the stages' least latencies, before a stage starts when what is left is
too short, and as soon as the policy drops one of its stage requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from router import kserve
from router.http_errors import HttpError, dropped, error_body, too_large
from router.infer_route import InferHeaders
from router.model_schema import validate_inputs
from router.query_exec import Fail, Finish, QueryRun, QuerySpec, RunStage, Step
from router.query_wiring import WiringError, stack, stage_items
from router.types import Answered, Dropped, Outcome
from router.types import Request as PolicyRequest

if TYPE_CHECKING:
    from router.app import ModelInfo, RouterService


class QueryMetrics:
    """Per query: answers by outcome (`answered`, or the drop reason), and the latency of the
    answered ones (arrival to answer, the router's clock)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "tnx_router_queries",
            "Query requests answered, per query and outcome (answered, or the drop reason)",
            labelnames=["query", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "tnx_router_query_latency_seconds",
            "Answered query requests: arrival to answer",
            labelnames=["query"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )


@dataclass(slots=True)
class _Stage:
    """One running stage: its model, how its items were laid out, and their results."""

    info: ModelInfo
    lead: tuple[int, ...] | None  # None: the root, one request of the query's samples
    results: list[Mapping[str, np.ndarray] | None]
    left: int
    done_at: float = 0.0


@dataclass(slots=True)
class _Execution:
    """One query request carried through its query's stages on the router's sessions."""

    request: kserve.InferRequest
    service: RouterService
    spec: QuerySpec
    run: QueryRun
    samples: int
    metrics: QueryMetrics
    stages: dict[str, _Stage] = field(default_factory=dict)
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    waiting: dict[asyncio.Future[Outcome], tuple[str, int]] = field(default_factory=dict)

    async def answer(self, steps: list[Step]) -> Response:
        while True:
            for step in steps:
                if isinstance(step, Fail):
                    return self._failed(step)
                if isinstance(step, Finish):
                    return self._finished()
            more: list[Step] = []
            for step in steps:
                if isinstance(step, RunStage):
                    more += await self._start(step)
            if more:
                steps = more
                continue
            done, _ = await asyncio.wait(self.waiting, return_when=asyncio.FIRST_COMPLETED)
            steps = []
            for fut in done:
                sid, j = self.waiting.pop(fut)
                steps += self._item_done(sid, j, fut.result())

    async def _start(self, step: RunStage) -> list[Step]:
        router = self.service.router
        assert router is not None
        s = self.spec.stage(step.stage)
        info = await self.service.model_info(s.model)
        if s.after is None:
            lead, items, n = None, [self.request.inputs], self.samples
        else:
            parent = self.stages[s.after].info
            where = f"query '{self.spec.id}' stage '{s.id}'"
            try:
                laid = stage_items(self.outputs[s.after], parent.output_names, info.inputs, where)
            except WiringError as err:
                raise HttpError(500, str(err)) from None
            lead, items, n = laid.lead, laid.items, 1
        self.stages[s.id] = _Stage(info, lead, [None] * len(items), len(items))
        now = router.now()
        if not items:
            return self._stage_ended(s.id, now)
        owner = self.service.share.target(s.session, now)
        for j, inputs in enumerate(items):
            if owner is not None:
                fut = asyncio.ensure_future(
                    self._forward(owner, s.session, s.model, s.budget_ms, inputs, step.deadline)
                )
            else:
                fut = self._submit(s.session, inputs, n, step.deadline)
            self.waiting[fut] = (s.id, j)
        return []

    def _submit(
        self, session: str, inputs: dict[str, np.ndarray], n: int, deadline: float
    ) -> asyncio.Future[Outcome]:
        service, router = self.service, self.service.router
        assert router is not None
        r = router.request(session, inputs, n)
        r.deadline = deadline
        service.metrics.on_arrival(session)
        if router.pending() >= service.max_pending:
            fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            fut.set_result(Dropped(r, "overloaded", router.now()))
            return fut
        return router.submit(r)

    async def _forward(
        self,
        owner: str,
        session: str,
        model: str,
        slo_ms: float,
        inputs: dict[str, np.ndarray],
        deadline: float,
    ) -> Outcome:
        """A stage request served by the router that owns its session's GPUs."""
        router = self.service.router
        assert router is not None
        now = router.now()
        r = PolicyRequest(f"forwarded-{id(inputs)}", session, now, deadline)
        head, raws = kserve.encode_request(inputs)
        body = b"".join([head, *raws])
        headers = InferHeaders(
            f"/v2/models/{model}/infer",
            content_type=b"application/octet-stream",
            header_length=str(len(head)).encode(),
            slo_ms=repr(slo_ms).encode(),
        )
        reply = await self.service.forwarder.forward(
            owner, headers.path, headers, body, deadline - now
        )
        if reply.status != 200:
            try:
                err = json.loads(reply.body)
            except ValueError:
                err = {}
            reason = str(err.get("reason") or f"http_{reply.status}")
            return Dropped(r, reason, router.now(), str(err.get("error", "")))
        length = dict(reply.headers).get(b"inference-header-content-length")
        outputs = kserve.decode_response(reply.body, None if length is None else int(length))
        return Answered(r, outputs, owner, now, router.now())

    def _item_done(self, sid: str, j: int, outcome: Outcome) -> list[Step]:
        router = self.service.router
        assert router is not None
        if isinstance(outcome.request.id, int):  # submitted here, not forwarded
            self.service.metrics.on_outcome(outcome)
        now = router.now()
        if isinstance(outcome, Dropped):
            return self.run.stage_failed(now, sid, outcome.reason, outcome.detail)
        st = self.stages[sid]
        st.results[j] = outcome.result
        st.left -= 1
        return self._stage_ended(sid, now) if st.left == 0 else []

    def _stage_ended(self, sid: str, now: float) -> list[Step]:
        st = self.stages[sid]
        st.done_at = now
        if st.lead is None:
            self.outputs[sid] = dict(st.results[0] or {})
        else:
            results = [r for r in st.results if r is not None]
            self.outputs[sid] = stack(st.lead, results, _output_specs(st.info))
        return self.run.stage_done(now, sid)

    def _failed(self, fail: Fail) -> Response:
        self.metrics.outcomes.labels(self.spec.id, fail.reason).inc()
        return failure_response(self.spec.id, fail)

    def _finished(self) -> Response:
        self.metrics.outcomes.labels(self.spec.id, "answered").inc()
        assert self.service.router is not None
        took = self.service.router.now() - self.run.arrival
        self.metrics.latency.labels(self.spec.id).observe(took / 1000.0)
        parts = []
        for sid, st in self.stages.items():
            body, _ = kserve.encode_response(
                self.spec.stage(sid).model, st.info.version, self.outputs[sid], _JSON_ANSWER
            )
            parts.append(json.dumps(sid).encode() + b":" + body)
        timing = {sid: round(st.done_at - self.run.arrival, 3) for sid, st in self.stages.items()}
        head: dict[str, Any] = {"query": self.spec.id}
        if self.request.id is not None:
            head["id"] = self.request.id
        head["stage_done_ms"] = timing
        opening = json.dumps(head)[:-1].encode()
        body = opening + b',"stages":{' + b",".join(parts) + b"}}"
        return Response(body, media_type="application/json")


_JSON_ANSWER = kserve.InferRequest({})  # every output, as JSON


def _output_specs(info: ModelInfo) -> list[Any]:
    from router.model_schema import specs_from_metadata

    return specs_from_metadata(info.metadata, info.max_batch_size)[1]


def failure_response(query: str, fail: Fail) -> Response:
    """The answer to a query that was not served: a stage's drop reason, as infer answers it
    (503 with Retry-After, 400 for the request's own fault)."""
    stage = f" at stage '{fail.stage}'" if fail.stage else ""
    err = dropped(query, fail.reason, fail.detail)
    message = f"query '{query}' not served{stage}: " + err.message.split(": ", 1)[-1]
    return Response(
        error_body(message, reason=fail.reason),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )


async def serve_query(
    service: RouterService, query: str, request: Request, metrics: QueryMetrics
) -> Response:
    router = service.router
    assert router is not None
    arrival = router.now()  # the SLO counts from here: reading the body is part of it
    spec = service.queries.get(query)  # 404, 503 no_placement
    run = QueryRun(spec, arrival, service.reserve_ms)
    steps = run.start(arrival)
    if steps and isinstance(steps[0], Fail):  # refused before the body is read
        metrics.outcomes.labels(spec.id, steps[0].reason).inc()
        return failure_response(spec.id, steps[0])
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > service.max_body_bytes:
        raise too_large(service.max_body_bytes, int(length))
    body = await request.body()
    if len(body) > service.max_body_bytes:
        raise too_large(service.max_body_bytes)
    req = kserve.decode_request(
        body, kserve.parse_header_length(request.headers.get(kserve.INFERENCE_HEADER))
    )
    info = await service.model_info(spec.root.model)
    n = validate_inputs(req, info.inputs, outputs=None, max_batch_size=info.max_batch_size)
    execution = _Execution(req, service, spec, run, n or 1, metrics)
    return await execution.answer(steps)


def install(app: FastAPI, service: RouterService) -> None:
    """Mount `POST /v1/queries/{query}` (its answers: docs/queries.md, the OpenAPI document)."""
    metrics = QueryMetrics(service.metrics.registry)

    @app.post("/v1/queries/{query}")
    async def run_query(query: str, request: Request) -> Response:
        return await serve_query(service, query, request, metrics)

    app.state.query_metrics = metrics
