"""Prometheus metrics of the router: per session arrivals, answers in and out of SLO, drops by
reason and latency; per GPU batch sizes and busy time. One registry per router instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from router.driver import BatchEnded, Event
from router.stats import ModelStats
from router.types import Answered, Dispatch, Dropped, Outcome

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.arrival_counts: dict[str, int] = {}
        self.stats = ModelStats()  # Triton's statistics extension, from the same hooks
        r = self.registry
        self.arrivals = Counter(
            "tnx_router_arrivals", "Requests accepted, per session", ["session"], registry=r
        )
        self.in_slo = Counter(
            "tnx_router_answered_in_slo", "Answers within the SLO", ["session"], registry=r
        )
        self.late = Counter(
            "tnx_router_answered_late", "Answers after the SLO", ["session"], registry=r
        )
        self.dropped = Counter(
            "tnx_router_dropped",
            "Requests answered 503/4xx without service",
            ["session", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "tnx_router_latency_seconds",
            "Arrival to answer",
            ["session"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tnx_router_batch_size",
            "Samples per dispatched batch",
            ["gpu"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.busy = Counter(
            "tnx_router_gpu_busy_seconds", "Time a batch was in flight", ["gpu"], registry=r
        )
        self.batch_failures = Counter(
            "tnx_router_batch_failures", "Batches that failed", ["gpu", "status"], registry=r
        )

    def on_arrival(self, session: str) -> None:
        self.arrivals.labels(session).inc()
        # A plain copy for /v1/sessions, which the control plane polls for rates.
        self.arrival_counts[session] = self.arrival_counts.get(session, 0) + 1

    def on_outcome(self, outcome: Outcome) -> None:
        self.stats.on_outcome(outcome)
        s = outcome.request.session
        if isinstance(outcome, Answered):
            (self.late if outcome.late else self.in_slo).labels(s).inc()
            self.latency.labels(s).observe(outcome.latency_ms / 1000.0)
        elif isinstance(outcome, Dropped):
            self.dropped.labels(s, outcome.reason).inc()

    def on_event(self, now: float, event: Event) -> None:
        self.stats.on_event(event)
        if isinstance(event, Dispatch):
            self.batch_size.labels(event.gpu).observe(event.n_samples)
        elif isinstance(event, BatchEnded):
            self.busy.labels(event.dispatch.gpu).inc((event.finished - event.started) / 1000.0)
            if event.status != "ok":
                self.batch_failures.labels(event.dispatch.gpu, event.status).inc()
