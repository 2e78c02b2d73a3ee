"""A router's share of the plan: the GPUs it owns, and where the other requests go.

The control plane names one owner per planned GPU (`control.ownership`), the
only router that batches for it; a router builds its batching policy on its own
GPUs alone (`local`), so duty cycles stay intact however many routers there
are. A request for a session with no GPU here goes to an owner of one of the
session's GPUs, chosen in proportion to the rate planned there. A session with
GPUs both here and elsewhere is served here up to the rate planned here: past
it (this router takes more of the session's requests than its GPUs were planned
for), the excess goes to the other owners, so a session's load follows its plan
whichever routers the clients reach. A plan that names no owners (a plan file,
a control plane with one router), or a router with no URL to be known by, keeps
every GPU: the one-router setup. Pure but for the random pick: time comes in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from control.types import Plan

# Weight of an owner whose GPUs are planned no rate for the session (idle, not excluded).
_MIN_WEIGHT = 1e-3


@dataclass(slots=True)
class RateMeter:
    """Arrivals per second of one session: the last whole window's, or this one's so far."""

    window_ms: float = 1000.0
    start: float = -math.inf
    count: int = 0
    last: float = 0.0  # the rate over the last window

    def add(self, now: float) -> float:
        """Count an arrival at `now` (ms); the rate it makes, per second."""
        if now - self.start >= self.window_ms:
            gap = now - self.start
            self.last = self.count * 1000.0 / gap if gap < 2 * self.window_ms else 0.0
            self.start, self.count = now, 0
        self.count += 1
        return max(self.last, self.count * 1000.0 / self.window_ms)


@dataclass(slots=True)
class Share:
    local: Plan  # the plan restricted to the GPUs this router dispatches to
    here: frozenset[str]  # sessions with a GPU here
    remote: dict[str, tuple[list[str], list[float]]]  # session → (owners, cumulative weights)
    local_rate: dict[str, float]  # sessions also elsewhere → rate planned here
    owners: dict[str, str | None]  # gpu → owner, as the plan named them
    _meters: dict[str, RateMeter] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: Plan, me: str | None) -> Share:
        """`plan` as the router known as `me` runs it."""
        owners = {g.gpu: g.owner for g in plan.gpus}
        every = frozenset(a.session for g in plan.gpus for a in g.allocations)
        if me is None or all(o is None for o in owners.values()):
            return cls(plan, every, {}, {}, owners)
        me = me.rstrip("/")
        mine = [g for g in plan.gpus if g.owner is None or g.owner.rstrip("/") == me]
        mine_ids = {g.gpu for g in mine}
        local_rate: dict[str, float] = {}
        for g in mine:
            for a in g.allocations:
                local_rate[a.session] = local_rate.get(a.session, 0.0) + a.rate
        weights: dict[str, dict[str, float]] = {}
        for g in plan.gpus:
            if g.owner is None or g.gpu in mine_ids:
                continue
            for a in g.allocations:
                w = weights.setdefault(a.session, {})
                w[g.owner] = w.get(g.owner, 0.0) + max(a.rate, _MIN_WEIGHT)
        remote = {}
        for sid, w in weights.items():
            urls = sorted(w)
            total, cum = 0.0, []
            for u in urls:
                total += w[u]
                cum.append(total)
            remote[sid] = (urls, cum)
        local = plan.model_copy(update={"gpus": mine})
        split = {s: r for s, r in local_rate.items() if s in remote}
        return cls(local, frozenset(local_rate), remote, split, owners)

    def target(self, session: str, now: float) -> str | None:
        """The owner to forward a request of `session` arriving at `now` (ms) to; None:
        serve it here."""
        found = self.remote.get(session)
        if found is None:
            return None
        planned = self.local_rate.get(session)
        if planned is not None:
            rate = self._meters.setdefault(session, RateMeter()).add(now)
            if rate <= planned or random.random() * rate < planned:
                return None
        urls, cum = found
        if len(urls) == 1:
            return urls[0]
        return random.choices(urls, cum_weights=cum)[0]
