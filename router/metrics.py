"""Prometheus metrics of the router: per session arrivals, answers in and out of SLO, drops by
reason and latency; per GPU batch sizes and busy time. One registry per router instance."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from router.driver import BatchEnded, Event
from router.latency import Correction
from router.stats import ModelStats
from router.types import Answered, Dispatch, Dropped, Outcome

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(slots=True, frozen=True)
class _SessionSeries:
    arrivals: Any
    in_slo: Any
    late: Any
    latency: Any


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.arrival_counts: dict[str, int] = {}
        self._series: dict[str, _SessionSeries] = {}
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

    def watch_latency(
        self, corrections: Callable[[], Mapping[tuple[str, str], Correction]]
    ) -> None:
        """Export the latency model's correction per (gpu, model), read at each scrape."""
        self.registry.register(_LatencyCollector(corrections))

    def _session(self, session: str) -> _SessionSeries:
        # `labels()` takes a lock and hashes its arguments: once per session, not per request.
        series = self._series.get(session)
        if series is None:
            series = self._series[session] = _SessionSeries(
                self.arrivals.labels(session),
                self.in_slo.labels(session),
                self.late.labels(session),
                self.latency.labels(session),
            )
        return series

    def on_arrival(self, session: str) -> None:
        self._session(session).arrivals.inc()
        # A plain copy for /v1/sessions, which the control plane polls for rates.
        self.arrival_counts[session] = self.arrival_counts.get(session, 0) + 1

    def on_outcome(self, outcome: Outcome) -> None:
        self.stats.on_outcome(outcome)
        s = outcome.request.session
        if isinstance(outcome, Answered):
            series = self._session(s)
            (series.late if outcome.late else series.in_slo).inc()
            series.latency.observe(outcome.latency_ms / 1000.0)
        elif isinstance(outcome, Dropped):
            self.dropped.labels(s, outcome.reason).inc()

    def on_refused(self, session: str, reason: str) -> None:
        """A request answered at the door, before it became a Request (no Outcome)."""
        self.stats.on_refused(session)
        self.dropped.labels(session, reason).inc()

    def on_event(self, now: float, event: Event) -> None:
        self.stats.on_event(event)
        if isinstance(event, Dispatch):
            self.batch_size.labels(event.gpu).observe(event.n_samples)
        elif isinstance(event, BatchEnded):
            self.busy.labels(event.dispatch.gpu).inc((event.finished - event.started) / 1000.0)
            if event.status != "ok":
                self.batch_failures.labels(event.dispatch.gpu, event.status).inc()


class _LatencyCollector:
    """Gauges of router.latency's l̂(b) = scale·l(b) + overhead + spread·σ, applied with
    `weight` (it fades toward the profile while no batch confirms it)."""

    def __init__(self, corrections: Callable[[], Mapping[tuple[str, str], Correction]]) -> None:
        self._corrections = corrections

    def collect(self) -> Iterator[Metric]:
        labels = ["gpu", "model"]
        families = {
            "scale": GaugeMetricFamily(
                "tnx_router_latency_scale", "Fitted scale of the profiled l(b)", labels=labels
            ),
            "overhead_ms": GaugeMetricFamily(
                "tnx_router_latency_overhead_ms", "Fitted fixed overhead per batch", labels=labels
            ),
            "sigma_ms": GaugeMetricFamily(
                "tnx_router_latency_sigma_ms", "Residual deviation of batch times", labels=labels
            ),
            "weight": GaugeMetricFamily(
                "tnx_router_latency_weight",
                "How much of the correction applies now (1: all, 0: the profile alone)",
                labels=labels,
            ),
        }
        for (gpu, model), c in self._corrections().items():
            for name, family in families.items():
                family.add_metric([gpu, model], getattr(c, name))
        yield from families.values()
