"""The control loop: observe rates, re-plan incrementally, actuate make-before-break, publish.

Each tick (1 s) the control plane samples the routers' arrival counters. It
re-plans at every epoch, sooner when a session's observed rate leaves
[0.8, 1.1] × the rate it was planned for (Nexus's band) or when sessions are
added, changed or removed. A re-plan starts from the previous plan (few model
moves), loads what the new plan needs and waits for ready, then publishes the
new plan revision (routers poll `GET /v1/plan`), waits until every known router
runs it and has drained the requests of removed allocations, and only then
unloads what is no longer needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from control.actuator import Actuator, ApplyResult
from control.problem import fleet_classes
from control.rates import RateWindow, out_of_band
from control.scheduler import schedule, workload_sessions
from control.store import Store
from control.types import Plan, Session, Workload
from exporters.errors import UserInputError
from model_repo_tools.fleet import Fleet
from model_repo_tools.profiles import ProfileSet

log = logging.getLogger(__name__)
MIN_RATE = 0.5  # a session nobody calls keeps a small allocation, so its first request lands


@dataclass(slots=True)
class ControlConfig:
    epoch_s: float = 30.0
    tick_s: float = 1.0
    window_s: float = 5.0
    min_interval_s: float = 3.0  # between two re-plans
    policy: str = "tnx"
    drain_s: float = 1.0  # beyond the largest SLO, before unloading


class ControlMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.gpus = Gauge("tnx_control_gpus_used", "GPUs the applied plan uses", registry=r)
        self.revision = Gauge("tnx_control_plan_revision", "Applied plan revision", registry=r)
        self.replans = Counter("tnx_control_replans", "Re-plans applied", ["reason"], registry=r)
        self.loads = Counter("tnx_control_model_loads", "Model loads", registry=r)
        self.load_failures = Counter("tnx_control_model_load_failures", "Failed loads", registry=r)
        self.unloads = Counter("tnx_control_model_unloads", "Model unloads", registry=r)
        self.rate = Gauge(
            "tnx_control_session_rate",
            "Request rate per session (req/s)",
            ["session", "kind"],
            registry=r,
        )


@dataclass(slots=True)
class PlanRecord:
    revision: int
    plan: Plan
    applied_at: float
    reason: str = ""
    loads: list[tuple[str, str]] = field(default_factory=list)
    unloads: list[tuple[str, str]] = field(default_factory=list)


class ControlPlane:
    def __init__(
        self,
        fleet: Fleet,
        repo: Path,
        profiles: ProfileSet,
        store: Store,
        routers: list[str] | None = None,
        config: ControlConfig | None = None,
        actuator: Actuator | None = None,
    ) -> None:
        self.fleet, self.repo, self.profiles, self.store = fleet, Path(repo), profiles, store
        self.curves = profiles.curves()
        self.routers = [u.rstrip("/") for u in routers or []]
        self.config = config or ControlConfig()
        self.actuator = actuator or Actuator(fleet, repo)
        self.metrics = ControlMetrics()
        self.window = RateWindow(self.config.window_s)
        self.current: PlanRecord | None = None
        self.history: list[PlanRecord] = []
        self.planned_rates: dict[str, float] = {}
        self.router_revisions: dict[str, int] = {}
        self._dirty = False
        self._last_replan = -math.inf
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    # ---- sessions -------------------------------------------------------------------

    def seed(self, workload: Workload) -> None:
        """First start: the workload's sessions (queries split into stage sessions)."""
        if self.store.sessions():
            return  # a restart keeps what the store holds
        for s in workload_sessions(workload, self.curves, fleet_classes(self.fleet)):
            self.store.put_session(s)

    def sessions(self) -> list[Session]:
        return self.store.sessions()

    def put_session(self, session: Session) -> None:
        types = {g.gpu_type for g in self.fleet.gpus}
        if not any((session.model, t) in self.curves for t in types):
            raise UserInputError(
                f"session {session.id}: no profile for model {session.model!r} "
                f"on the fleet's gpu types ({', '.join(sorted(types))})"
            )
        self.store.put_session(session)
        self._dirty = True

    def delete_session(self, session_id: str) -> bool:
        gone = self.store.delete_session(session_id)
        self._dirty = self._dirty or gone
        return gone

    def observed_rates(self) -> dict[str, float]:
        return self.window.rates() if self.window.full(time.monotonic()) else {}

    def planning_rates(self) -> dict[str, float]:
        observed = self.observed_rates()
        return {
            s.id: max(MIN_RATE, observed[s.id]) if s.id in observed else s.rate
            for s in self.sessions()
        }

    def allocated_rates(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.current is not None:
            for g in self.current.plan.gpus:
                for a in g.allocations:
                    out[a.session] = out.get(a.session, 0.0) + a.rate
        return out

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=3.0)
        last = self.store.last_plan()
        if last is not None:
            # A restart: reconcile the fleet with the stored plan (normally: nothing to load).
            revision, plan = last
            result = await asyncio.to_thread(self.actuator.apply, plan)
            self._adopt(revision, result, "restart")
            self.planned_rates = self.allocated_rates()
            self._last_replan = time.monotonic()
        else:
            await self.replan("initial")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                await self.tick()
            except Exception:  # keep the loop alive; the next tick tries again
                log.exception("control tick failed")

    async def tick(self) -> None:
        await self.sample_routers()
        now = time.monotonic()
        if now - self._last_replan < self.config.min_interval_s:
            return
        reason = self.trigger(now)
        if reason:
            await self.replan(reason)

    def trigger(self, now: float) -> str | None:
        if self._dirty:
            return "sessions changed"
        if now - self._last_replan >= self.config.epoch_s:
            return "epoch"
        observed = self.observed_rates()
        for sid, rate in observed.items():
            planned = self.planned_rates.get(sid)
            if planned is not None and out_of_band(rate, planned):
                return f"rate of {sid}: {rate:.1f} req/s against {planned:.1f} planned"
        return None

    async def sample_routers(self) -> None:
        if self._http is None:
            return
        now = time.monotonic()
        for url in self.routers:
            try:
                body = (await self._http.get(f"{url}/v1/sessions")).json()
            except (httpx.HTTPError, ValueError) as err:
                log.debug("router %s: %s", url, err)
                continue
            self.window.add(url, now, {s["id"]: s["arrivals"] for s in body.get("sessions", [])})
            self.router_revisions[url] = int(body.get("plan_revision", 0))
        for sid, r in self.observed_rates().items():
            self.metrics.rate.labels(sid, "observed").set(r)

    # ---- planning and actuation -----------------------------------------------------

    async def replan(self, reason: str) -> PlanRecord | None:
        async with self._lock:
            self._dirty = False
            self._last_replan = time.monotonic()
            rates = self.planning_rates()
            sessions = [s.model_copy(update={"rate": rates[s.id]}) for s in self.sessions()]
            previous = self.current.plan if self.current else None
            sched = await asyncio.to_thread(
                schedule,
                sessions,
                self.curves,
                fleet_classes(self.fleet),
                self.config.policy,
                previous,
            )
            self.planned_rates = rates
            for sid, r in rates.items():
                self.metrics.rate.labels(sid, "planned").set(r)
            if previous is not None and sched.plan == previous:
                return None  # nothing changed: no new revision, no moves
            result = await asyncio.to_thread(self.actuator.apply, sched.plan)
            revision = (self.current.revision if self.current else 0) + 1
            record = self._adopt(revision, result, reason)
            log.info(
                "plan %d (%s): %d gpus, %d loads, %d unloads due",
                revision,
                reason,
                len(record.plan.gpus),
                len(result.loaded),
                len(result.pending_unloads),
            )
        if result.pending_unloads:
            await self._break(record, result)
        return record

    def _adopt(self, revision: int, result: ApplyResult, reason: str) -> PlanRecord:
        record = PlanRecord(revision, result.plan, time.time(), reason, result.loaded)
        self.store.save_plan(revision, result.plan, record.applied_at)
        self.current = record
        self.history = (self.history + [record])[-20:]
        self.metrics.gpus.set(len(result.plan.gpus))
        self.metrics.revision.set(revision)
        self.metrics.replans.labels(reason.split(":")[0]).inc()
        self.metrics.loads.inc(len(result.loaded))
        self.metrics.load_failures.inc(len(result.failed))
        for sid, r in self.allocated_rates().items():
            self.metrics.rate.labels(sid, "allocated").set(r)
        return record

    async def _break(self, record: PlanRecord, result: ApplyResult) -> None:
        """Unload once every router runs `record` and its old batches have drained."""
        deadline = time.monotonic() + 15.0
        while self.routers and time.monotonic() < deadline:
            await self.sample_routers()
            if all(self.router_revisions.get(u, 0) >= record.revision for u in self.routers):
                break
            await asyncio.sleep(0.2)
        slo = max((s.slo_ms for s in self.sessions()), default=0.0)
        await asyncio.sleep(slo / 1000.0 + self.config.drain_s)
        async with self._lock:
            if self.current is not record:
                return  # a newer plan took over; it computes its own unloads
            needed = {(g.gpu, a.model) for g in record.plan.gpus for a in g.allocations}
            todo = [p for p in result.pending_unloads if p not in needed]
            done = await asyncio.to_thread(self.actuator.unload, todo)
            record.unloads = done
            self.metrics.unloads.inc(len(done))
