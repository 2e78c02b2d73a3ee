"""Reading the routers: their cumulative arrival counters and the plan revision each runs.

Each router answers `GET /v1/sessions` with `{"plan_revision": n, "sessions":
[{"id", "arrivals"}]}`; the counts go into a `RateWindow` (pure), the revisions
tell the service when every router runs a new plan, so that unloads can follow.
A router that does not answer is skipped until the next sample.
"""

from __future__ import annotations

import logging

import httpx

from control.rates import RateWindow

log = logging.getLogger(__name__)


class RouterSampler:
    def __init__(self, routers: list[str], window_s: float, timeout_s: float = 1.0) -> None:
        self.routers = [u.rstrip("/") for u in routers]
        self.window = RateWindow(window_s)
        self.revisions: dict[str, int] = {}  # router → the plan revision it last said it runs
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._timeout_s)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

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
            self.window.add(url, now, {s["id"]: s["arrivals"] for s in body.get("sessions", [])})
            self.revisions[url] = int(body.get("plan_revision", 0))

    def observed(self, now: float) -> dict[str, float]:
        """Rates over a full window of every router; {} until there is one."""
        return self.window.rates() if self.window.full(now) else {}

    def all_run(self, revision: int) -> bool:
        """Whether every router runs `revision` (or a later one)."""
        return all(self.revisions.get(u, 0) >= revision for u in self.routers)
