"""Observed request rates from the routers' cumulative arrival counters, and the re-plan trigger.

Pure: samples (time, counts) go in, rates come out. A session's rate is the
growth of its arrival count over a sliding window, summed over routers. Nexus
re-plans when a rate leaves [0.8, 1.1] × its allocation; so does tnx, once a
full window has been observed (a restarted control plane does not re-plan on
an empty window).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

LOW, HIGH = 0.8, 1.1


@dataclass(slots=True)
class RateWindow:
    window_s: float = 5.0
    # per router: deque of (time, {session: cumulative count})
    _samples: dict[str, deque[tuple[float, dict[str, float]]]] = field(default_factory=dict)

    def add(self, router: str, now: float, counts: Mapping[str, float]) -> None:
        q = self._samples.setdefault(router, deque())
        q.append((now, dict(counts)))
        while len(q) > 2 and q[1][0] <= now - self.window_s:
            q.popleft()

    def full(self, now: float) -> bool:
        """Whether every router has been observed over (nearly) a whole window."""
        return bool(self._samples) and all(
            len(q) >= 2 and q[-1][0] - q[0][0] >= 0.8 * self.window_s
            for q in self._samples.values()
        )

    def rates(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for q in self._samples.values():
            if len(q) < 2:
                continue
            (t0, c0), (t1, c1) = q[0], q[-1]
            if t1 <= t0:
                continue
            for sid, n in c1.items():
                # A router restart resets its counters: count from zero then.
                grown = n - c0.get(sid, 0.0) if n >= c0.get(sid, 0.0) else n
                out[sid] = out.get(sid, 0.0) + grown / (t1 - t0)
        return out


def out_of_band(observed: float, allocated: float, floor: float = 1.0) -> bool:
    """Whether `observed` left [LOW, HIGH] × `allocated` by more than `floor` req/s."""
    if abs(observed - allocated) < floor:
        return False
    return observed > HIGH * allocated or observed < LOW * allocated
