"""The control plane's Prometheus metrics (`GET /metrics`), in a registry of its own."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from control.health import Transition


class ControlMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.gpus = Gauge("tnx_control_gpus_used", "GPUs the applied plan uses", registry=r)
        self.revision = Gauge("tnx_control_plan_revision", "Applied plan revision", registry=r)
        self.replans = Counter("tnx_control_replans", "Re-plans applied", ["reason"], registry=r)
        self.loads = Counter("tnx_control_model_loads", "Model loads", registry=r)
        self.load_failures = Counter("tnx_control_model_load_failures", "Failed loads", registry=r)
        self.unloads = Counter("tnx_control_model_unloads", "Model unloads", registry=r)
        self.server_up = Gauge(
            "tnx_control_server_up", "1 if the server may be planned", ["server"], registry=r
        )
        self.transitions = Counter(
            "tnx_control_server_transitions",
            "Servers taken out of (down) or back into (up) the plannable fleet",
            ["transition"],
            registry=r,
        )
        self.rate = Gauge(
            "tnx_control_session_rate",
            "Request rate per session (req/s)",
            ["session", "kind"],
            registry=r,
        )

    def rates(self, kind: str, rates: Mapping[str, float]) -> None:
        """Per session: `kind` is observed, planned or allocated."""
        for sid, r in rates.items():
            self.rate.labels(sid, kind).set(r)

    def server(self, server: str, up: bool, transition: Transition | None) -> None:
        self.server_up.labels(server).set(1.0 if up else 0.0)
        if transition is not None:
            self.transitions.labels(transition).inc()

    def adopted(self, revision: int, gpus: int, label: str, loads: int, failures: int) -> None:
        """A plan revision applied: `label` is the kind of its reason."""
        self.gpus.set(gpus)
        self.revision.set(revision)
        self.replans.labels(label).inc()
        self.loads.inc(loads)
        self.load_failures.inc(failures)
