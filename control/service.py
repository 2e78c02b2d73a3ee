"""The control loop: observe rates and fleet health, re-plan incrementally, actuate make-before-break.

Each tick (1 s) the control plane samples the routers' arrival counters. It
re-plans at every epoch, sooner when a session's observed rate leaves
[0.8, 1.1] × the rate it was planned for (Nexus's band) or when sessions are
added, changed or removed. A re-plan starts from the previous plan (few model
moves), loads what the new plan needs and waits for ready, then publishes the
new plan revision (routers poll `GET /v1/plan`), waits until every known router
runs it and has drained the requests of removed allocations, and only then
unloads what is no longer needed.

Fleet health (`control.health`) runs beside it: every server is probed every
`probe_s`, and a router that saw a batch fail asks for a probe at once. A
server that fails is out of the plannable fleet immediately and the loop is
woken to re-plan its sessions onto live servers (failover, still make before
break on the live ones). When it has been healthy for a few probes it rejoins:
the re-plan then starts from the plan in force before it failed (failback), so
its sessions go back where they were and the actuator reloads what a restarted,
empty server lacks. Each epoch also reconciles the fleet with the plan, so a
server that restarted between two probes is reloaded too.
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
from control.health import FleetHealth, Transition
from control.probe import Prober
from control.problem import fleet_classes
from control.rates import RateWindow, out_of_band
from control.scheduler import schedule, workload_sessions
from control.store import Store
from control.types import Plan, Session, Unplaced, Workload
from model_repo_tools.fleet import Fleet, FleetGpu
from model_repo_tools.profiles import ProfileSet
from tnx.errors import UserInputError

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
    probe_s: float = 0.5  # between two health probes of every server
    probe_timeout_s: float = 1.0  # a server that does not answer live in this is down
    rejoin_probes: int = 3  # healthy probes in a row before a failed server is planned again


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
        prober: Prober | None = None,
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
        self.health = FleetHealth(
            sorted({g.server for g in fleet.gpus}), rejoin_probes=self.config.rejoin_probes
        )
        self._prober: Prober | None = prober
        self._probe_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # A change of fleet health not yet re-planned for: (reason, whether a server rejoined)
        self._health_change: tuple[str, bool] | None = None
        # The plan in force when the first server of the current outage failed: where the
        # sessions go back to when it rejoins.
        self._restore: Plan | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._breaks: set[asyncio.Task[None]] = set()
        self._reconcile: set[str] = set()  # live servers a router saw fail: check their models

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
        self._http = httpx.AsyncClient(timeout=1.0)
        if self._prober is None:
            self._prober = Prober(self.config.probe_timeout_s)
        await self.probe_fleet()  # a server down at start is not planned onto
        self._health_change = None
        last = self.store.last_plan()
        if last is not None and not self._uses_down_server(last[1]):
            # A restart: reconcile the fleet with the stored plan (normally: nothing to load).
            revision, plan = last
            result = await asyncio.to_thread(self.actuator.apply, plan, None, self.live_gpus())
            self._adopt(revision, result, "restart")
            self.planned_rates = self.allocated_rates()
            self._last_replan = time.monotonic()
        else:
            if last is not None:
                self.current = PlanRecord(last[0], last[1], time.time(), "stored")
            await self.replan("initial" if last is None else "restart: a server is down")
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop())
        self._probe_task = loop.create_task(self._probe_loop())

    async def stop(self) -> None:
        for task in (self._probe_task, self._task, *self._breaks, *self._reports):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._http is not None:
            await self._http.aclose()
        if self._prober is not None:
            await self._prober.close()

    async def _loop(self) -> None:
        while True:
            # A tick every tick_s, or at once when fleet health changed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.tick_s)
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # keep the loop alive; the next tick tries again
                log.exception("control tick failed")

    async def tick(self) -> None:
        if self._health_change is not None:
            # Failover and failback do not wait for min_interval_s: sessions are down now.
            (reason, rejoined), self._health_change = self._health_change, None
            await self.replan(reason, failback=rejoined)
            return
        if self._reconcile:
            servers, self._reconcile = self._reconcile, set()
            await self.reconcile(servers)
        await self.sample_routers()
        now = time.monotonic()
        if now - self._last_replan < self.config.min_interval_s:
            return
        reason = self.trigger(now)
        if reason:
            await self.replan(reason)

    # ---- fleet health ---------------------------------------------------------------

    def live_gpus(self) -> set[str]:
        """Ids of the fleet's GPUs whose server may be planned now."""
        return {g.id for g in self.fleet.gpus if self.health.is_up(g.server)}

    def _uses_down_server(self, plan: Plan) -> bool:
        live = self.live_gpus()
        return any(g.gpu not in live for g in plan.gpus)

    def _servers(self, only: set[str] | None = None) -> list[FleetGpu]:
        """One fleet GPU per server (probes are per server), optionally of `only` servers."""
        seen: dict[str, FleetGpu] = {}
        for g in self.fleet.gpus:
            if only is None or g.server in only:
                seen.setdefault(g.server, g)
        return list(seen.values())

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.probe_s)
            try:
                await self.probe_fleet()
            except Exception:  # a broken probe round must not stop the next
                log.exception("fleet probe failed")

    async def probe_fleet(self, only: set[str] | None = None) -> list[tuple[str, Transition]]:
        """Probe every server (or `only` these) once; wake the loop on a change."""
        assert self._prober is not None
        targets = self._servers(only)
        results = await asyncio.gather(*(self._prober.live(g) for g in targets))
        now = time.monotonic()
        changed: list[tuple[str, Transition]] = []
        for g, (ok, error) in zip(targets, results, strict=True):
            t = self.health.observe(now, g.server, ok, error)
            self.metrics.server_up.labels(g.server).set(1.0 if self.health.is_up(g.server) else 0.0)
            if t is not None:
                changed.append((g.server, t))
                self.metrics.transitions.labels(t).inc()
                if t == "down":
                    log.warning("server %s down: %s", g.server, error)
                else:
                    log.warning("server %s healthy again: planned again", g.server)
        if changed:
            self._on_health_change(changed)
        return changed

    def _on_health_change(self, changed: list[tuple[str, Transition]]) -> None:
        downs = [s for s, t in changed if t == "down"]
        ups = [s for s, t in changed if t == "up"]
        if downs and self._restore is None and self.current is not None:
            self._restore = self.current.plan
        parts = []
        if downs:
            parts.append(f"failover: server {', '.join(downs)} down")
        if ups:
            parts.append(f"failback: server {', '.join(ups)} back")
        reason = "; ".join(parts)
        if self._health_change is not None:
            old_reason, old_up = self._health_change
            self._health_change = (f"{old_reason}; {reason}", old_up or bool(ups))
        else:
            self._health_change = (reason, bool(ups))
        self._wake.set()

    async def _check_reported(self, server: str) -> None:
        await self.probe_fleet({server})
        if self.health.is_up(server):
            # Live, yet a router's batch failed there: a server restarted between two probes
            # answers live with none of its models. Reconcile it now, not at the epoch.
            self._reconcile.add(server)
            self._wake.set()

    async def reconcile(self, servers: set[str]) -> list[tuple[str, str]]:
        """Load what the current plan needs on `servers` and they lack; the loads done."""
        async with self._lock:
            if self.current is None:
                return []
            gpus = {g.id for g in self.fleet.gpus if g.server in servers} & self.live_gpus()
            result = await asyncio.to_thread(self.actuator.apply, self.current.plan, None, gpus)
        self._suspect_unreachable(result)
        if result.loaded:
            log.warning("reloaded %s on a server that had lost them", result.loaded)
            self.metrics.loads.inc(len(result.loaded))
        return result.loaded

    def _suspect_unreachable(self, result: ApplyResult) -> None:
        """Servers the actuator could not read are probed now, as a router's report would."""
        for gpu_id, error in result.unreachable.items():
            self.report(gpu_id, False, error)

    def report(self, gpu_id: str, healthy: bool, error: str = "") -> bool:
        """A router's view of a GPU: a failed batch asks for a probe of its server now.
        Returns whether a probe was started."""
        gpu = self.fleet.by_id().get(gpu_id)
        if gpu is None:
            raise UserInputError(f"gpu {gpu_id!r} is not in the fleet")
        if healthy or self._prober is None or not self.health.suspect(gpu.server):
            return False
        log.info("router reports %s failing: %s", gpu_id, error)
        task = asyncio.get_running_loop().create_task(self._check_reported(gpu.server))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)
        return True

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

    async def replan(self, reason: str, failback: bool = False) -> PlanRecord | None:
        """Plan the sessions onto the live servers from the previous plan (from the plan
        before the outage on `failback`), load, publish; unloads follow in the background."""
        async with self._lock:
            self._dirty = False
            self._last_replan = time.monotonic()
            rates = self.planning_rates()
            sessions = [s.model_copy(update={"rate": rates[s.id]}) for s in self.sessions()]
            previous = self.current.plan if self.current else None
            base = self._restore if failback and self._restore is not None else previous
            live = self.live_gpus()
            fleet = Fleet(gpus=[g for g in self.fleet.gpus if g.id in live])
            if fleet.gpus:
                sched = await asyncio.to_thread(
                    schedule, sessions, self.curves, fleet_classes(fleet), self.config.policy, base
                )
                plan = sched.plan
            else:
                plan = _nothing_up(sessions, self.health.down())
            if not self.health.down():
                self._restore = None  # the outage is over: this plan is the new normal
            self.planned_rates = rates
            for sid, r in rates.items():
                self.metrics.rate.labels(sid, "planned").set(r)
            if previous is not None and plan == previous:
                if reason != "epoch":
                    return None  # nothing changed: no new revision, no moves
                # Same plan: reconcile the servers with it (one restarted unnoticed between
                # two probes has lost its models); a new revision only if a load failed.
                result = await asyncio.to_thread(self.actuator.apply, plan, None, live)
                self._suspect_unreachable(result)
                if result.loaded:
                    log.warning("epoch reconcile reloaded %s", result.loaded)
                    self.metrics.loads.inc(len(result.loaded))
                if result.plan == previous:
                    return None
                reason = "epoch: a load failed"
            else:
                result = await asyncio.to_thread(self.actuator.apply, plan, None, live)
                self._suspect_unreachable(result)
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
            # In the background: waiting for routers and drains must not hold up the next
            # failover.
            task = asyncio.get_running_loop().create_task(self._break(record, result))
            self._breaks.add(task)
            task.add_done_callback(self._breaks.discard)
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
            live = self.live_gpus()
            # A server that went down meanwhile keeps its models: the re-plan when it rejoins
            # reads its state and unloads what the plan no longer needs there.
            todo = [p for p in todo if p[0] in live]
            done = await asyncio.to_thread(self.actuator.unload, todo)
            record.unloads = done
            self.metrics.unloads.inc(len(done))


def _nothing_up(sessions: list[Session], down: list[str]) -> Plan:
    """The plan while no server is up: every session unplaced, saying why."""
    why = f"no live server (down: {', '.join(down) or 'none'})"
    return Plan(
        gpus=[],
        unplaced=[
            Unplaced(session=s.id, rate=s.rate, reason=why, model=s.model)
            for s in sessions
            if s.rate > 0
        ],
    )
