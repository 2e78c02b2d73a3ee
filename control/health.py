"""Fleet health: which Triton servers the planner may use, from probes and routers' reports.

Pure: probe results go in with `now` (seconds), transitions come out. A server
is taken out of the plannable fleet at its first failed probe (a refused
connection, a timeout, not ready), so its sessions move at once rather than at
the next epoch. It comes back only after `rejoin_probes` healthy probes in a
row, and that count doubles for every time it went down within `flap_window_s`
(capped at `max_rejoin_probes`), so a flapping server is planned again ever
more slowly instead of dragging its sessions back and forth.

A router's report of a failed batch is not a verdict: it asks for a probe now
(`suspect`), and the probe decides. A batch can fail for reasons the server
survives (a client timeout on a slow batch), and a router can be wrong.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Transition = Literal["down", "up"]


@dataclass(slots=True)
class ServerHealth:
    up: bool = True
    streak: int = 0  # healthy probes in a row since it last went down
    since: float | None = None  # when `up` last changed (or it was first probed)
    error: str = ""  # why it last failed
    downs: deque[float] = field(default_factory=deque)  # when it went down, recent first out


@dataclass(slots=True)
class FleetHealth:
    servers: list[str]
    rejoin_probes: int = 3
    flap_window_s: float = 120.0
    max_rejoin_probes: int = 48
    _state: dict[str, ServerHealth] = field(default_factory=dict)
    _suspects: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for s in self.servers:
            self._state.setdefault(s, ServerHealth())

    def observe(self, now: float, server: str, ok: bool, error: str = "") -> Transition | None:
        """One probe's result; returns the transition it caused, if any."""
        st = self._state.setdefault(server, ServerHealth())
        if st.since is None:
            st.since = now
        self._suspects.discard(server)
        if not ok:
            st.streak = 0
            st.error = error or "probe failed"
            if not st.up:
                return None
            st.up, st.since = False, now
            st.downs.append(now)
            return "down"
        if st.up:
            return None
        st.streak += 1
        if st.streak < self.required(server, now):
            return None
        st.up, st.since, st.streak = True, now, 0
        return "up"

    def required(self, server: str, now: float) -> int:
        """Healthy probes in a row `server` needs before it is planned again."""
        downs = self._state[server].downs
        while downs and downs[0] < now - self.flap_window_s:
            downs.popleft()
        flaps = max(0, len(downs) - 1)
        return min(self.max_rejoin_probes, self.rejoin_probes * 2**flaps)

    def suspect(self, server: str) -> bool:
        """A router saw `server` fail a batch: probe it now. False if already pending."""
        if server not in self._state or server in self._suspects:
            return False
        self._suspects.add(server)
        return True

    def forget(self, server: str) -> None:
        """`server` is no longer part of the fleet (fleet discovery saw it go for good)."""
        self._state.pop(server, None)
        self._suspects.discard(server)

    def is_up(self, server: str) -> bool:
        st = self._state.get(server)
        return st is None or st.up

    def down(self) -> list[str]:
        return sorted(s for s, st in self._state.items() if not st.up)

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """Per server: up, since how long, the last error and what it needs to rejoin."""
        out: list[dict[str, object]] = []
        for server, st in sorted(self._state.items()):
            row: dict[str, object] = {
                "server": server,
                "up": st.up,
                "for_s": None if st.since is None else round(max(0.0, now - st.since), 3),
            }
            if not st.up:
                row.update(
                    error=st.error, healthy_probes=st.streak, needs=self.required(server, now)
                )
            out.append(row)
        return out
