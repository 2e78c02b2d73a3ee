"""Reading the routers: their cumulative arrival counters and the plan revision each runs.

Each router answers `GET /v1/sessions` with `{"plan_revision": n, "sessions":
[{"id", "arrivals"}]}`; the counts go into a `RateWindow` per router (pure), the
revisions tell the service when every router runs a new plan, so that unloads
can follow. The routers sampled are the fixed ones (`--router URL`) and those
live by registration (`set_routers`); a router that leaves takes its window
with it. A router that does not answer is skipped until the next sample.
"""

from __future__ import annotations

import logging

import httpx

from control.rates import RateWindow

log = logging.getLogger(__name__)


class RouterSampler:
    def __init__(self, routers: list[str], window_s: float, timeout_s: float = 1.0) -> None:
        self.fixed = [u.rstrip("/") for u in routers]
        self.routers = list(self.fixed)
        self.window_s = window_s
        self.windows: dict[str, RateWindow] = {}  # router → its arrival counts over time
        self.revisions: dict[str, int] = {}  # router → the plan revision it last said it runs
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._timeout_s)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def set_routers(self, registered: list[str]) -> None:
        """Sample the fixed routers and `registered` from now on; forget those gone."""
        self.routers = list(dict.fromkeys([*self.fixed, *(u.rstrip("/") for u in registered)]))
        for gone in set(self.windows) - set(self.routers):
            del self.windows[gone]
        for gone in set(self.revisions) - set(self.routers):
            del self.revisions[gone]

    async def sample(self, now: float) -> None:
        """One sample of every router, taken at `now`; nothing before `start`."""
        if self._http is None:
            return
        for url in self.routers:
            try:
                body = (await self._http.get(f"{url}/v1/sessions")).json()
            except (httpx.HTTPError, ValueError) as err:
                log.debug("router %s: %s", url, err)
                continue
            window = self.windows.setdefault(url, RateWindow(self.window_s))
            window.add(url, now, {s["id"]: s["arrivals"] for s in body.get("sessions", [])})
            self.revisions[url] = int(body.get("plan_revision", 0))

    def observed(self, now: float) -> dict[str, float]:
        """Rates summed over routers, once every router's window is full; {} until then."""
        if not self.windows or not all(w.full(now) for w in self.windows.values()):
            return {}
        out: dict[str, float] = {}
        for w in self.windows.values():
            for sid, rate in w.rates().items():
                out[sid] = out.get(sid, 0.0) + rate
        return out

    def all_run(self, revision: int) -> bool:
        """Whether every router runs `revision` (or a later one)."""
        return all(self.revisions.get(u, 0) >= revision for u in self.routers)
