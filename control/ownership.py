"""Which router owns which GPU: every planned GPU to exactly one live router (pure).

Many routers in front of one fleet would break each other's duty cycles if
they all dispatched to every GPU, so each planned GPU has one owner, the only
router that batches for it (Nexus's backends, here inside the routers). Routers
register by heartbeat (their plan poll); one whose last heartbeat is older than
`timeout_s` is dead and its GPUs go to the living.

The assignment is stable and balanced by the planned rate each GPU carries:
a GPU keeps its owner while the owner lives; GPUs new to the plan or orphaned
go, heaviest first, to the least loaded router; then single GPUs move from the
most to the least loaded router while that lowers the larger load by at least
`REBALANCE` (so a router that registers late gets a share, and small rate
changes move nothing). No I/O, no clock: `now` comes in.
"""

from __future__ import annotations

from collections.abc import Mapping

from control.types import Plan

# A router that missed this many seconds of heartbeats (4 plan polls) is dead.
TIMEOUT_S = 2.0
# A rebalancing move must cut the larger of the two loads by this fraction: a move
# drops what the old owner had queued for the GPU, so near-balance is left alone.
REBALANCE = 0.2
# Every GPU weighs this much besides its planned rate, so idle GPUs spread by count.
GPU_WEIGHT = 1.0


def live_routers(heartbeats: Mapping[str, float], now: float, timeout_s: float) -> list[str]:
    """Routers whose last heartbeat is at most `timeout_s` old, sorted."""
    return sorted(r for r, seen in heartbeats.items() if now - seen <= timeout_s)


def gpu_loads(plan: Plan) -> dict[str, float]:
    """Each planned GPU's weight: its planned rate plus GPU_WEIGHT."""
    return {g.gpu: GPU_WEIGHT + sum(a.rate for a in g.allocations) for g in plan.gpus}


def assign(
    plan: Plan,
    heartbeats: Mapping[str, float],
    now: float,
    previous: Mapping[str, str],
    timeout_s: float = TIMEOUT_S,
) -> dict[str, str]:
    """gpu → owning router for every GPU of `plan`, given each router's last heartbeat and
    the previous assignment; {} when no router is live."""
    routers = live_routers(heartbeats, now, timeout_s)
    if not routers:
        return {}
    weights = gpu_loads(plan)
    owner = {g: r for g, r in previous.items() if g in weights and r in routers}
    load = dict.fromkeys(routers, 0.0)
    for g, r in owner.items():
        load[r] += weights[g]
    for g in sorted((g for g in weights if g not in owner), key=lambda g: (-weights[g], g)):
        r = min(routers, key=lambda r: (load[r], r))
        owner[g] = r
        load[r] += weights[g]
    while len(routers) > 1:
        hi = max(routers, key=lambda r: (load[r], r))
        lo = min(routers, key=lambda r: (load[r], r))
        best = min(
            (g for g, r in owner.items() if r == hi),
            key=lambda g: (max(load[hi] - weights[g], load[lo] + weights[g]), g),
            default=None,
        )
        if best is None:
            break
        w = weights[best]
        if max(load[hi] - w, load[lo] + w) > (1.0 - REBALANCE) * load[hi]:
            break
        owner[best] = lo
        load[hi] -= w
        load[lo] += w
    return dict(sorted(owner.items()))


class RouterRegistry:
    """Routers that registered by heartbeat, and the assignment last handed out (no I/O).

    For `timeout_s` after it starts (`started`, a control plane's start or restart) the
    registry is `settling`: every live router has had time to poll only after that, so
    until then it hands out no assignment (a restarted control plane must not tell the
    first router to poll that it is alone and owns every GPU)."""

    def __init__(self, timeout_s: float = TIMEOUT_S, started: float = 0.0) -> None:
        self.timeout_s = timeout_s
        self.started = started
        self.heartbeats: dict[str, float] = {}  # router URL → time of its last heartbeat
        self.owners: dict[str, str] = {}  # gpu → router, as last assigned

    def settling(self, now: float) -> bool:
        return now - self.started < self.timeout_s

    def heartbeat(self, router: str, now: float) -> None:
        self.heartbeats[router.rstrip("/")] = now

    def live(self, now: float) -> list[str]:
        """The live routers; one dead for ten timeouts is forgotten."""
        for r, seen in list(self.heartbeats.items()):
            if now - seen > 10 * self.timeout_s:
                del self.heartbeats[r]
        return live_routers(self.heartbeats, now, self.timeout_s)

    def assign(self, plan: Plan, now: float) -> dict[str, str]:
        """gpu → owner for `plan` at `now` (kept as the previous assignment for the next).
        A router alone owns every GPU without being named: the plan it is served stays the
        plan stored, as for a router that does not register."""
        if len(self.live(now)) < 2:
            self.owners = {}
        else:
            self.owners = assign(plan, self.heartbeats, now, self.owners, self.timeout_s)
        return self.owners
