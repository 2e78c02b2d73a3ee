"""The control loop's driver: the epoch decision (`control.epoch`) with the I/O around it.

Each tick (1 s) the control plane samples the routers' arrival counters
(`control.sampling`) and asks `EpochPolicy.decide` what changes: nothing, a
re-plan and why (the epoch, a rate out of its band, sessions changed, a
failover or failback), servers to reconcile, and when to ask again. A re-plan
starts from the previous plan (few model moves), loads what the new plan needs
and waits for ready, then publishes the new plan revision (routers poll
`GET /v1/plan`), waits until every known router runs it and has drained the
requests of removed allocations, and only then unloads what is no longer
needed.

Fleet health (`control.monitor`) runs beside it: every server is probed every
`probe_s`, and a router that saw a batch fail asks for a probe at once. A
server that fails is out of the plannable fleet immediately and the loop is
woken to re-plan its sessions onto live servers (failover, still make before
break on the live ones). When it has been healthy for a few probes it rejoins:
the re-plan then starts from the plan in force before it failed (failback), so
its sessions go back where they were and the actuator reloads what a restarted,
empty server lacks. Each epoch also reconciles the fleet with the plan, so a
server that restarted between two probes is reloaded too.

Time comes from an injected `control.clock.Clock`: real time in service, a
manual clock in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from control.actuator import Actuator, ApplyResult
from control.clock import Clock, RealClock
from control.epoch import (
    EpochConfig,
    EpochPolicy,
    Replan,
    allocated_rates,
    nothing_up,
    planning_rates,
)
from control.metrics import ControlMetrics
from control.monitor import Changes, FleetMonitor
from control.ownership import RouterRegistry
from control.probe import Prober
from control.problem import fleet_classes
from control.query_analysis import Analysis, analyse, need_on
from control.sampling import RouterSampler
from control.scheduler import schedule, workload_sessions
from control.store import Store
from control.types import Plan, QueryPlan, Session, Workload
from model_repo_tools.fleet import Fleet, FleetGpu
from model_repo_tools.profiles import ProfileSet
from tnx.errors import UserInputError

log = logging.getLogger(__name__)


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
    router_wait_s: float = 15.0  # at most, for every router to run a new plan before unloads
    max_moves: int | None = None  # per re-plan, to free GPUs (control.epoch.EpochConfig)


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
        clock: Clock | None = None,
    ) -> None:
        self.fleet, self.repo, self.profiles, self.store = fleet, Path(repo), profiles, store
        # The queries' budgets as last published (their structure is in the store).
        self.query_plans: list[QueryPlan] = []
        self.curves = profiles.curves()
        self.config = cfg = config or ControlConfig()
        self.clock = clock or RealClock()
        self.actuator = actuator or Actuator(fleet, repo)
        self.metrics = ControlMetrics()
        self.epoch = EpochPolicy(
            EpochConfig(cfg.epoch_s, cfg.tick_s, cfg.min_interval_s, cfg.max_moves)
        )
        self.sampler = RouterSampler(routers or [], cfg.window_s)
        # Routers that register by polling the plan.
        self.routers = RouterRegistry(started=self.clock.now())
        self.monitor = FleetMonitor(
            fleet,
            self.clock,
            self.metrics,
            on_change=self._on_health_change,
            on_live_suspect=self._on_live_suspect,
            prober=prober,
            probe_timeout_s=cfg.probe_timeout_s,
            rejoin_probes=cfg.rejoin_probes,
        )
        self.health = self.monitor.health
        self.current: PlanRecord | None = None
        self.history: list[PlanRecord] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._breaks: set[asyncio.Task[None]] = set()

    # ---- sessions and rates ---------------------------------------------------------

    def seed(self, workload: Workload) -> None:
        """First start: the workload's sessions (queries split into stage sessions) and its
        queries; a restart keeps what the store holds."""
        if not self.store.sessions():
            for s in workload_sessions(workload, self.curves, fleet_classes(self.fleet)):
                self.store.put_session(s)
        if not self.store.queries.all():  # also a store seeded before queries were kept
            known = {s.id for s in self.store.sessions()}
            for q in workload.queries:
                if all(f"{q.id}/{st.id}" in known for st in q.stages):
                    self.store.queries.put(q)

    def _analyse(self, sessions: list[Session]) -> Analysis:
        """Query analysis (Nexus §6.2) again, for the rates about to be planned: stage
        sessions whose budget moved are stored with it, the queries' plans published."""
        types = {g.gpu_type for g in self.fleet.gpus}
        result = analyse(self.store.queries.all(), sessions, need_on(self.curves, types))
        stored = {s.id: s for s in self.store.sessions()}
        for s in result.changed:
            self.store.put_session(stored[s.id].model_copy(update={"slo_ms": s.slo_ms}))
        self.query_plans = result.plans
        return result

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
        self.epoch.sessions_changed()

    def delete_session(self, session_id: str) -> bool:
        gone = self.store.delete_session(session_id)
        if gone:
            self.epoch.sessions_changed()
        return gone

    @property
    def planned_rates(self) -> dict[str, float]:
        return self.epoch.planned_rates

    def observed_rates(self) -> dict[str, float]:
        return self.sampler.observed(self.clock.now())

    def allocated_rates(self) -> dict[str, float]:
        return allocated_rates(self.current.plan if self.current else None)

    async def _sample(self) -> None:
        self.sampler.set_routers(self.routers.live(self.clock.now()))
        await self.sampler.sample(self.clock.now())
        self.metrics.rates("observed", self.observed_rates())

    # ---- routers and GPU ownership --------------------------------------------------

    def register(self, router: str) -> None:
        """A router's heartbeat (its plan poll): it is live, may own GPUs, and is sampled."""
        self.routers.heartbeat(router, self.clock.now())

    def owners(self) -> dict[str, str]:
        """gpu → the live router that alone dispatches to it ({} when none registered)."""
        if self.current is None:
            return {}
        return self.routers.assign(self.current.plan, self.clock.now())

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self.sampler.start()
        self.monitor.start()
        await self.monitor.probe()  # a server down at start is not planned onto
        self.epoch.health_known()
        last = self.store.last_plan()
        if last is not None and not self._uses_down_server(last[1]):
            # A restart: reconcile the fleet with the stored plan (normally: nothing to load).
            revision, plan = last
            self.query_plans = plan.queries
            result = await asyncio.to_thread(self.actuator.apply, plan, None, self.live_gpus())
            self._adopt(revision, result, Replan("restart", "restart"))
            self.epoch.replan_started(self.clock.now())
            self.epoch.planned(self.allocated_rates(), outage_over=not self.health.down())
        else:
            if last is not None:
                self.current = PlanRecord(last[0], last[1], self.clock.wall(), "stored")
            down = Replan("restart: a server is down", "restart")
            await self.replan(Replan("initial", "initial") if last is None else down)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop())
        self._probe_task = loop.create_task(self.monitor.run(self.config.probe_s))

    async def stop(self) -> None:
        for task in (self._probe_task, self._task, *self._breaks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.monitor.close()
        await self.sampler.close()

    async def _loop(self) -> None:
        wake_at = self.clock.now() + self.config.tick_s
        while True:
            await self._sleep_until(wake_at)  # or until fleet health changes
            self._wake.clear()
            try:
                wake_at = await self.tick()
            except Exception:  # keep the loop alive; the next tick tries again
                log.exception("control tick failed")
                wake_at = self.clock.now() + self.config.tick_s

    async def _sleep_until(self, when: float) -> None:
        if self._wake.is_set():
            return
        sleep = asyncio.ensure_future(self.clock.sleep(max(0.0, when - self.clock.now())))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            woken.cancel()

    async def tick(self) -> float:
        """Sample the routers, decide, and do what was decided; returns when to tick next."""
        if not self.epoch.urgent:  # a failover does not wait for the routers' answers
            await self._sample()
        decision = self.epoch.decide(self.clock.now(), self.observed_rates())
        if decision.reconcile:
            await self.reconcile(set(decision.reconcile))
        if decision.replan is not None:
            await self.replan(decision.replan)
        return decision.wake_at

    # ---- fleet health ---------------------------------------------------------------

    def live_gpus(self) -> set[str]:
        """Ids of the fleet's GPUs whose server may be planned now."""
        return self.monitor.live_gpus()

    def _uses_down_server(self, plan: Plan) -> bool:
        live = self.live_gpus()
        return any(g.gpu not in live for g in plan.gpus)

    async def probe_fleet(self, only: set[str] | None = None) -> Changes:
        """Probe every server (or `only` these) once; wake the loop on a change."""
        return await self.monitor.probe(only)

    def report(self, gpu_id: str, healthy: bool, error: str = "") -> bool:
        """A router's view of a GPU: a failed batch asks for a probe of its server now.
        Returns whether a probe was started."""
        return self.monitor.report(gpu_id, healthy, error)

    def _on_health_change(self, changed: Changes) -> None:
        self.epoch.health_changed(changed, self.current.plan if self.current else None)
        self._wake.set()

    def _on_live_suspect(self, server: str) -> None:
        # Reconcile it now, not at the epoch: it may have restarted and lost its models.
        self.epoch.reconcile_requested(server)
        self._wake.set()

    def _suspect_unreachable(self, result: ApplyResult) -> None:
        """Servers the actuator could not read are probed now, as a router's report would."""
        for gpu_id, error in result.unreachable.items():
            self.report(gpu_id, False, error)

    # ---- fleet membership (fleet discovery, control.membership) ---------------------

    def join(self, gpus: list[FleetGpu]) -> None:
        """Qualified servers discovery found: a new one is planned on at once; one that left
        and came back fails back as a recovered server does, after its healthy probes."""
        known = self.fleet.by_id()
        self.fleet.gpus.extend(new := [g for g in gpus if g.id not in known])
        if fresh := [g.server for g in new if self.health.is_up(g.server)]:
            why = Replan(f"fleet: server {', '.join(fresh)} joined", "fleet")
            task = asyncio.get_running_loop().create_task(self.replan(why))
            self._breaks.add(task)
            task.add_done_callback(self._breaks.discard)

    def leave(self, servers: list[str], why: str) -> None:
        """Servers discovery finds no more: out of the fleet, down as failed ones are."""
        self.fleet.gpus[:] = [g for g in self.fleet.gpus if g.server not in servers]
        self.monitor.depart(servers, why)

    # ---- planning and actuation -----------------------------------------------------

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

    async def replan(self, why: Replan) -> PlanRecord | None:
        """Plan the sessions onto the live servers from the previous plan (from the plan
        before the outage on failback), load, publish; unloads follow in the background."""
        async with self._lock:
            self.epoch.replan_started(self.clock.now())
            rates = planning_rates(self.sessions(), self.observed_rates())
            sessions = [s.model_copy(update={"rate": rates[s.id]}) for s in self.sessions()]
            sessions = self._analyse(sessions).sessions
            previous = self.current.plan if self.current else None
            base = self.epoch.base(why, previous)
            live = self.live_gpus()
            fleet = Fleet(gpus=[g for g in self.fleet.gpus if g.id in live])
            if fleet.gpus:
                sched = await asyncio.to_thread(
                    schedule,
                    sessions,
                    self.curves,
                    fleet_classes(fleet),
                    self.config.policy,
                    base,
                    self.epoch.config.max_moves,
                )
                plan = sched.plan
            else:
                plan = nothing_up(sessions, self.health.down())
            plan = plan.model_copy(update={"queries": self.query_plans})
            self.epoch.planned(rates, outage_over=not self.health.down())
            self.metrics.rates("planned", rates)
            if previous is not None and plan == previous:
                if why.reason != "epoch":
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
                why = Replan("epoch: a load failed", "epoch")
            else:
                result = await asyncio.to_thread(self.actuator.apply, plan, None, live)
                self._suspect_unreachable(result)
            revision = (self.current.revision if self.current else 0) + 1
            record = self._adopt(revision, result, why)
            log.info(
                "plan %d (%s): %d gpus, %d loads, %d unloads due",
                revision,
                why.reason,
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

    def _adopt(self, revision: int, result: ApplyResult, why: Replan) -> PlanRecord:
        if result.plan.queries != self.query_plans:  # a failed load's plan is rebuilt bare
            result.plan = result.plan.model_copy(update={"queries": self.query_plans})
        record = PlanRecord(revision, result.plan, self.clock.wall(), why.reason, result.loaded)
        self.store.save_plan(revision, result.plan, record.applied_at)
        self.current = record
        self.history = (self.history + [record])[-20:]
        self.metrics.adopted(
            revision, len(result.plan.gpus), why.label, len(result.loaded), len(result.failed)
        )
        self.metrics.rates("allocated", self.allocated_rates())
        return record

    async def _break(self, record: PlanRecord, result: ApplyResult) -> None:
        """Unload once every router runs `record` and its old batches have drained."""
        deadline = self.clock.now() + self.config.router_wait_s
        while self.sampler.routers and self.clock.now() < deadline:
            await self._sample()
            if self.sampler.all_run(record.revision):
                break
            await self.clock.sleep(0.2)
        slo = max((s.slo_ms for s in self.sessions()), default=0.0)
        await self.clock.sleep(slo / 1000.0 + self.config.drain_s)
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
