"""What lets the policy's settle touch only what can act (`router.policy`).

A settle (after any event but an arrival) must act as if it had pruned every session's
queue and visited every GPU. Two indexes let it skip the rest and still decide the same:

- `DoomIndex`: sessions in a heap keyed by a lower bound of the time their head becomes
  hopeless under the drop mode; a settle pops only those whose bound has come, and the
  next timer is read from the heap as far as its bounds can beat the best found.
- The settle visits (`catch_up`): an idle GPU skipped by settles has the duty-cycle
  restarts those visits would have made applied when it is next looked at.

Pure bookkeeping over `router.plan_state`; no I/O, no clock.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable

from router.plan_state import GpuState, PlanState, SessionState
from router.types import DropMode

# Slack (ms) on the doom heap's bounds, far above their float rounding: a session whose
# bound is within it of `now` (or of the best doom time so far) is checked exactly.
MARGIN = 1e-3
# Settle visits kept before every parked GPU is caught up and the list restarts.
VISITS_KEPT = 1 << 16


class DoomIndex:
    """Sessions by a lower bound of their doom time; `touched` ones are re-keyed."""

    __slots__ = ("_plan", "_slist", "_mode", "_heap", "touched")

    def __init__(self, plan: PlanState, slist: list[SessionState], mode: DropMode) -> None:
        self._plan = plan
        self._slist = slist
        self._mode = mode
        self._heap: list[tuple[float, int, int]] = []  # (doom bound, version, session index)
        self.touched: set[int] = set(range(len(slist)))

    def doom_time(self, s: SessionState, now: float) -> float | None:
        """When the head of `s` becomes hopeless (None: never, or empty)."""
        return self._doom(s, now, exact=True)

    def bound(self, s: SessionState, now: float) -> float | None:
        """A lower bound of the session's doom time from now on (None: never doomed)."""
        return self._doom(s, now, exact=False)

    def _doom(self, s: SessionState, now: float, exact: bool) -> float | None:
        # Lazy drops a head at its deadline, early once even its fastest GPU would miss it:
        # `exact`, by `fastest` now; else by an upper bound of it from now on, whose None
        # (no GPU can take the head) bounds the doom time by -inf.
        if not s.queue or self._mode == "none":
            return None
        head = s.queue.head()
        if self._mode == "lazy":
            return head.deadline
        if exact:
            best = self._plan.fastest(s, head.n_samples, now)
            return None if best is None else head.deadline - best
        ub = self._plan.fastest_bound(s, head.n_samples, now)
        return -math.inf if ub is None else head.deadline - ub

    def rekey(self, now: float) -> None:
        slist, heap = self._slist, self._heap
        for i in self.touched:
            s = slist[i]
            s.version += 1
            key = self.bound(s, now)
            if key is not None:
                heapq.heappush(heap, (key, s.version, i))
        self.touched.clear()
        if len(heap) > 4 * len(slist) + 64:
            self._heap = [e for e in heap if e[1] == slist[e[2]].version]
            heapq.heapify(self._heap)

    def due(self, now: float) -> set[int]:
        """Pop the sessions whose doom bound has come: only they may need pruning now."""
        heap, slist = self._heap, self._slist
        due: set[int] = set()
        while heap and heap[0][0] <= now + MARGIN:
            _, version, i = heapq.heappop(heap)
            if version == slist[i].version:
                due.add(i)
        return due

    def earliest(self, now: float) -> float | None:
        """min over sessions of `doom_time`, reading the heap only as far as its bounds
        can still beat the best found."""
        heap, slist = self._heap, self._slist
        best: float | None = None
        held: list[tuple[float, int, int]] = []
        while heap:
            key, version, i = heap[0]
            if version != slist[i].version:
                heapq.heappop(heap)
                continue
            if best is not None and key - MARGIN > best:
                break
            held.append(heapq.heappop(heap))
            t = self.doom_time(slist[i], now)
            if t is not None and (best is None or t < best):
                best = t
        for e in held:
            heapq.heappush(heap, e)
        return best


def catch_up(visits: list[float], g: GpuState, upto: int) -> None:
    """Apply to an idle GPU's duty cycle the settle visits it was spared, [parked, upto):
    each visit at or after the cycle's end starts a new cycle."""
    lo, cs, d = g.parked, g.cycle_start, g.duty_cycle
    while True:
        j = bisect.bisect_left(visits, cs + d, lo, upto)
        if j >= upto:
            break
        cs = visits[j]
        g.served.clear()
        lo = j + 1
    g.cycle_start = cs
    g.parked = upto


def restart_visits(visits: list[float], gpus: Iterable[GpuState]) -> list[float]:
    """Catch every parked GPU up on `visits` and park it at 0 of the fresh list returned."""
    n = len(visits)
    for g in gpus:
        if g.parked >= 0:
            catch_up(visits, g, n)
            g.parked = 0
    return []
