"""One control-plane replica behind leader election: an ASGI app that is a standby until its
elector (`control.lease_elector`) holds the Lease, then the control plane for as long as
it does (a term).

A term is started fresh from the store each time (`start_term`: the fleet, the control
plane reading its sessions and last plan back, fleet discovery), so a replica taking
over carries on where the leader stopped, reconciling rather than reloading; when the
Lease is lost the term is stopped at once (no more loads, unloads or plans).

While it is not the leader a replica actuates nothing and serves no plan: every path
answers 503 with `{"error": …, "reason": "standby", "leader": …}` and `Retry-After`
(routers retry, and the Service sends them to the ready replica: `/healthz` is 503
here), except `/metrics`, which answers so that a liveness probe keeps a standby alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Term(Protocol):
    app: ASGIApp  # the control plane's API while this replica leads

    async def stop(self) -> None: ...


class Elector(Protocol):
    leader: bool
    holder: str | None

    async def run(
        self, on_elected: Callable[[], Awaitable[None]], on_deposed: Callable[[], Awaitable[None]]
    ) -> None: ...

    async def release(self, hold_off_s: float = 0.0) -> None: ...


class Replica:
    def __init__(
        self,
        elector: Elector,
        start_term: Callable[[], Awaitable[Term]],
        identity: str = "",
        hold_off_s: float = 15.0,
        first_term_required: bool = False,
    ) -> None:
        self.elector, self.start_term, self.identity = elector, start_term, identity
        self.hold_off_s = hold_off_s  # a replica whose term failed to start lets others try
        # A single replica (no Lease) fails its start, as `tnx control serve` always did,
        # when its term cannot start (a bad contract, no server): nobody else would lead.
        self.first_term_required = first_term_required
        self.term: Term | None = None
        self.terms = 0  # started, for operators and tests
        self._starting: asyncio.Task[None] | None = None
        self._campaign: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self.failure: BaseException | None = None

    # ---- leadership -----------------------------------------------------------------

    async def _elected(self) -> None:
        # The elector must keep renewing while the term starts (discovery may wait for
        # servers): the start runs beside it.
        self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        try:
            term = await self.start_term()
        except Exception as err:
            if not self.first_term_required:  # else startup raises it: the CLI says it
                log.error("control plane term could not start: %s", err)
            self.failure = err
            self._first.set()
            await self.elector.release(self.hold_off_s)
            return
        if not self.elector.leader:  # deposed while starting
            await term.stop()
            return
        self.term, self.terms, self.failure = term, self.terms + 1, None
        log.warning("leading the control plane (term %d)", self.terms)
        self._first.set()

    async def _deposed(self) -> None:
        await self._stop_term()

    async def _stop_term(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        term, self.term = self.term, None
        if term is not None:
            await term.stop()

    async def startup(self) -> None:
        """Campaign (and, for a single replica, wait for its term). Idempotent: a caller may
        start the replica before the server, whose lifespan then finds it started."""
        if self._campaign is not None:
            return
        self._campaign = asyncio.get_running_loop().create_task(
            self.elector.run(self._elected, self._deposed)
        )
        if self.first_term_required:
            await self._first.wait()
            if self.failure is not None:
                await self.shutdown()
                raise self.failure

    async def shutdown(self) -> None:
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._campaign
        await self._stop_term()
        await self.elector.release()

    # ---- ASGI -----------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        term = self.term
        if term is not None:
            await term.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if scope.get("path") == "/metrics":
            body = b"# HELP tnx_control_leader 1 if this replica leads\n"
            body += b"# TYPE tnx_control_leader gauge\ntnx_control_leader 0.0\n"
            await _answer(send, 200, body, "text/plain; version=0.0.4")
            return
        leader = self.elector.holder
        if self.elector.leader:
            error = "this replica leads and is starting the control plane"
        else:
            error = f"standby replica: the control plane is led by {leader or 'no replica yet'}"
        body = json.dumps({"error": error, "reason": "standby", "leader": leader}).encode()
        await _answer(send, 503, body, "application/json", retry_after=True)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as err:
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(
    send: Any, status: int, body: bytes, content_type: str, retry_after: bool = False
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
