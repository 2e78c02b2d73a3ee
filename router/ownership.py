"""A router's share of the plan: the GPUs it owns, and where the other sessions go.

The control plane names one owner per planned GPU (`control.ownership`), the
only router that batches for it; a router builds its batching policy on its own
GPUs alone (`local`), so duty cycles stay intact however many routers there
are. A request for a session with no GPU here goes to an owner of one of the
session's GPUs, chosen in proportion to the rate planned there. A plan that
names no owners (a plan file, a control plane no router registered with), or a
router that has no URL to be known by, keeps every GPU: the one-router setup.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from control.types import Plan

# Weight of an owner whose GPUs are planned no rate for the session (idle, not excluded).
_MIN_WEIGHT = 1e-3


@dataclass(frozen=True, slots=True)
class Share:
    local: Plan  # the plan restricted to the GPUs this router dispatches to
    remote: dict[str, tuple[list[str], list[float]]]  # session → (owners, cumulative weights)
    owners: dict[str, str | None]  # gpu → owner, as the plan named them

    @classmethod
    def of(cls, plan: Plan, me: str | None) -> Share:
        """`plan` as the router known as `me` runs it."""
        owners = {g.gpu: g.owner for g in plan.gpus}
        if me is None or all(o is None for o in owners.values()):
            return cls(plan, {}, owners)
        me = me.rstrip("/")
        mine = [g for g in plan.gpus if g.owner is None or g.owner.rstrip("/") == me]
        local = plan.model_copy(update={"gpus": mine})
        here = {a.session for g in mine for a in g.allocations}
        mine_ids = {g.gpu for g in mine}
        weights: dict[str, dict[str, float]] = {}
        for g in plan.gpus:
            if g.owner is None or g.gpu in mine_ids:
                continue
            for a in g.allocations:
                if a.session not in here:
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
        return cls(local, remote, owners)

    def target(self, session: str) -> str | None:
        """The owner to forward a request of `session` to; None: serve it here."""
        found = self.remote.get(session)
        if found is None:
            return None
        urls, cum = found
        if len(urls) == 1:
            return urls[0]
        return random.choices(urls, cum_weights=cum)[0]
