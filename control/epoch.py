"""The control plane's epoch decision, as a synchronous state machine.

Given the observed rates, the fleet's health and the last plan at `now`, what
changes? Events come in (sessions changed, servers went down or came back, a
live server lost its models, a re-plan began, a plan was made) and `decide`
answers with a `Decision`: a re-plan and its reason, the servers to reconcile
with the plan, and when to ask again. No I/O, no clock, no asyncio: every call
that depends on time takes `now` (seconds), so `control.service` drives it on
real time and a test on a manual clock.

The rules (Nexus §6, plus failover):

- **Epoch.** A re-plan every `epoch_s`, sooner when a session's observed rate
  leaves [0.8, 1.1] × the rate it was planned for (`control.rates`) or when
  sessions are added, changed or removed; never two within `min_interval_s`.
- **Failover and failback at once.** A server going down or coming back is
  re-planned for at the next decision, without waiting for the min interval or
  for fresh rates: its sessions are down now. The first server down of an
  outage keeps the plan then in force (`restore`), and a re-plan after one
  comes back starts from it, so the sessions go back where they were.
- **Reconcile.** A live server a router saw fail a batch (a restart between
  two probes, its models gone) is reconciled with the plan at the next
  decision, before any re-plan.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from control.health import Transition
from control.rates import out_of_band
from control.types import Plan, Session, Unplaced

# A session nobody calls keeps a small allocation, so its first request lands.
MIN_RATE = 0.5


@dataclass(frozen=True, slots=True)
class EpochConfig:
    epoch_s: float = 30.0
    tick_s: float = 1.0  # between two router samples, so between two looks at the rates
    min_interval_s: float = 3.0  # between two re-plans
    # Moves a re-plan may spend freeing GPUs, beyond those the new rates need (None: the
    # scheduler's default, control.incremental.move_budget); held-back ones come later.
    max_moves: int | None = None


@dataclass(frozen=True, slots=True)
class Replan:
    """Why a re-plan runs. `label` is the reason's kind (the metrics' `reason` label);
    `failback`: start from the plan in force before the outage."""

    reason: str
    label: str
    failback: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    replan: Replan | None = None
    reconcile: frozenset[str] = frozenset()  # servers to reconcile first
    wake_at: float = math.inf  # when to decide again, new events aside


class EpochPolicy:
    def __init__(self, config: EpochConfig | None = None) -> None:
        self.config = config or EpochConfig()
        self.last_replan = -math.inf
        self.planned_rates: dict[str, float] = {}  # the rates the last plan was made for
        self.restore: Plan | None = None  # the plan before the current outage
        self._dirty = False  # sessions changed since the last re-plan began
        self._health: list[str] = []  # health changes not yet re-planned for
        self._health_label = ""  # the first one's kind: failover or failback
        self._failback = False  # one of them was a server coming back
        self._reconcile: set[str] = set()

    # ---- events in -------------------------------------------------------------

    def sessions_changed(self) -> None:
        self._dirty = True

    def health_changed(
        self, changed: Sequence[tuple[str, Transition]], current: Plan | None
    ) -> None:
        """Servers went down or came back; `current`: the plan in force now."""
        downs = [s for s, t in changed if t == "down"]
        ups = [s for s, t in changed if t == "up"]
        if downs and self.restore is None and current is not None:
            self.restore = current
        parts = []
        if downs:
            parts.append(f"failover: server {', '.join(downs)} down")
        if ups:
            parts.append(f"failback: server {', '.join(ups)} back")
        if parts:
            if not self._health:
                self._health_label = "failover" if downs else "failback"
            self._health.append("; ".join(parts))
            self._failback = self._failback or bool(ups)

    def health_known(self) -> None:
        """The fleet's health as first probed is the fleet: no failover for it."""
        self._health, self._failback = [], False

    def reconcile_requested(self, server: str) -> None:
        self._reconcile.add(server)

    def replan_started(self, now: float) -> None:
        """A re-plan begins at `now`: it covers every session change made before."""
        self._dirty = False
        self.last_replan = now

    def planned(self, rates: Mapping[str, float], outage_over: bool) -> None:
        """A plan was made for `rates`; with no server down the outage is over and that
        plan is the new normal."""
        self.planned_rates = dict(rates)
        if outage_over:
            self.restore = None

    # ---- decisions out ---------------------------------------------------------

    @property
    def urgent(self) -> bool:
        """A failover or failback is due: decide without waiting for fresh rates."""
        return bool(self._health)

    def base(self, replan: Replan, previous: Plan | None) -> Plan | None:
        """The plan a re-plan starts from (few model moves)."""
        if replan.failback and self.restore is not None:
            return self.restore
        return previous

    def decide(self, now: float, observed: Mapping[str, float]) -> Decision:
        """What to do at `now`, given the rates observed over a full window ({} if none)."""
        tick = now + self.config.tick_s
        if self._health:
            replan = Replan("; ".join(self._health), self._health_label, self._failback)
            self._health, self._failback = [], False
            return Decision(replan=replan, wake_at=tick)
        reconcile, self._reconcile = frozenset(self._reconcile), set()
        ready = self._ready_at()
        replan = self._trigger(now, observed) if now >= ready else None
        if replan is not None:
            return Decision(replan, reconcile, tick)
        wake = tick
        if self.last_replan + self.config.epoch_s > now:
            wake = min(wake, self.last_replan + self.config.epoch_s)
        if now < ready and self._trigger(now, observed) is not None:
            wake = min(wake, ready)
        return Decision(None, reconcile, wake)

    def _ready_at(self) -> float:
        """The first time the min interval since the last re-plan has passed, as `now - last`
        counts it (last + min_interval may round to a time a hair short of it)."""
        t = self.last_replan + self.config.min_interval_s
        while t - self.last_replan < self.config.min_interval_s:
            t = math.nextafter(t, math.inf)
        return t

    def _trigger(self, now: float, observed: Mapping[str, float]) -> Replan | None:
        if self._dirty:
            return Replan("sessions changed", "sessions changed")
        if now - self.last_replan >= self.config.epoch_s:
            return Replan("epoch", "epoch")
        for sid, rate in observed.items():
            planned = self.planned_rates.get(sid)
            if planned is not None and out_of_band(rate, planned):
                return Replan(
                    f"rate of {sid}: {rate:.1f} req/s against {planned:.1f} planned",
                    f"rate of {sid}",
                )
        return None


def planning_rates(sessions: Iterable[Session], observed: Mapping[str, float]) -> dict[str, float]:
    """The rate to plan each session for: observed when a full window was, else declared."""
    return {s.id: max(MIN_RATE, observed[s.id]) if s.id in observed else s.rate for s in sessions}


def allocated_rates(plan: Plan | None) -> dict[str, float]:
    """Each session's rate summed over the GPUs `plan` gives it."""
    return plan.rates() if plan is not None else {}


def nothing_up(sessions: Iterable[Session], down: Sequence[str]) -> Plan:
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
