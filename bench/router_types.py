"""Configuration and result records of `tnx bench router` (see bench/router.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.perf_analyzer import PaRow
from bench.router_setup import PlanSetup, TritonBatcher

PARTS = ("latency", "goodput", "simulated", "recovery", "max-rate", "perf-analyzer")
SIM_TRACES = ("even", "poisson")  # even: as k6 sends; poisson: the simulator's usual trace
SYSTEMS = ("early", "lazy", "none", "triton")
RECOVERY_SYSTEMS = ("early", "triton")  # the router as it is deployed vs Triton direct


@dataclass(slots=True)
class BenchConfig:
    out: Path
    parts: tuple[str, ...] = PARTS
    loads: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 4.0)
    systems: tuple[str, ...] = SYSTEMS
    duration_s: float = 15.0
    batch: int = 8
    slo_factor: float = 5.0
    headroom: float = 1.5
    servers: int = 2
    overload: float = 4.0  # recovery: multiple of C before ...
    low_load: float = 0.5  # ... and after
    recovery_s: int = 10  # seconds of low load measured one by one
    latency_rate: float = 50.0
    tiny_slo_ms: float = 50.0
    max_rates: tuple[float, ...] = (500.0, 1000.0, 2000.0, 3000.0)
    max_rate_s: float = 5.0
    in_slo_target: float = 0.99
    timeout_s: float = 30.0  # client timeout per request; later counts as other
    warm_up_s: float = 3.0  # uncounted k6 load on each target before its first part
    sim_seeds: int = 5  # simulated: runs per level and trace (seeds 0..n-1), counts summed


@dataclass(slots=True)
class Row:
    """One load level of the goodput part."""

    system: str
    load: float
    offered_rps: float
    sent: int
    ok: int
    in_slo: int
    late: int
    dropped: int  # 503
    other: int
    not_sent: int  # k6 ran out of VUs: the load generator's failure
    unanswered: int  # sent, but no count (should be 0)
    goodput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    router_cpu_ms_per_req: float | None
    k6_cpu_ms_per_req: float
    router_late: int | None = None  # the router's own count (its clock, from arrival)
    mean_batch: float | None = None  # samples per batch the servers ran
    batch_ms: float | None = None  # router: mean time a batch was in flight, its clock
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SimRow:
    """The simulator at one measured goodput level: same plan, profiles, drop mode, offered
    rate and seconds; counts summed over `seeds` runs."""

    system: str
    load: float
    trace: str
    offered_rps: float  # what k6 sent per second, the simulation's rate
    noise_cv: float
    speed: float  # batch times = l(n) × speed × noise (1: the profile as planned)
    seeds: int
    sent: int
    in_slo: int
    late: int
    dropped: int
    goodput_rps: float  # per run: in SLO / (seeds × seconds)
    measured_in_slo: float  # the goodput row's in SLO / sent
    measured_goodput_rps: float

    @property
    def in_slo_share(self) -> float:
        return self.in_slo / self.sent if self.sent else 0.0

    @property
    def variant(self) -> str:
        """The table column: the trace, and whether batch times were the measured ones."""
        return self.trace if self.speed == 1.0 else f"{self.trace}, measured batch times"

    @property
    def ratio(self) -> float | None:
        """Simulated over measured goodput (None when nothing was measured in SLO)."""
        if self.measured_goodput_rps <= 0:
            return None
        return self.goodput_rps / self.measured_goodput_rps


@dataclass(slots=True)
class RateRow:
    """What one system answered at one steady rate (the latency and max-rate parts)."""

    system: str
    rate: float
    sent: int
    in_slo: int
    late: int
    s503: int
    other: int
    not_sent: int


@dataclass(slots=True)
class LatencyRow(RateRow):
    p50_ms: float | None
    p99_ms: float | None


@dataclass(slots=True)
class RecoveryRow:
    system: str
    overload_rps: float
    low_rps: float
    overload_goodput_rps: float
    overload_503: int
    overload_sent: int
    per_second: list[float]  # fraction in SLO of each second of low load (sent + not sent)
    recovered_s: int | None  # seconds of low load until every later second holds the target
    not_sent: int


@dataclass(slots=True)
class MaxRateRow(RateRow):
    p99_ms: float | None
    held: bool


@dataclass(slots=True)
class Results:
    command: str
    convnet: PlanSetup | None = None
    batcher: TritonBatcher | None = None
    tiny: PlanSetup | None = None
    latency: list[LatencyRow] = field(default_factory=list)
    goodput: list[Row] = field(default_factory=list)
    simulated: list[SimRow] = field(default_factory=list)
    recovery: list[RecoveryRow] = field(default_factory=list)
    max_rate: list[MaxRateRow] = field(default_factory=list)
    perf_analyzer: list[PaRow] = field(default_factory=list)
