"""Forwarding an infer request to the router that owns its session's GPUs (one extra hop).

The body goes on verbatim (JSON or Triton's binary tensor extension), with the
headers that say how to read it, the `X-SLO-Ms` that picked the session, and
`X-TNX-Deadline-Ms`: the milliseconds left of the request's budget when it
left, so the owner applies the same early drop to the same deadline. A request
that carries that header was forwarded once and is never forwarded again (the
loop guard: the owner serves it or answers 503 `not_owner`). An owner that
cannot be reached, or does not answer within the budget and `MARGIN_S`, is a
503 `owner_unreachable`, never a hang. Connections are kept alive per owner
(the lean protocol of `router.triton_http`).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote, urlsplit

from router.http_errors import RETRY, HttpError
from router.infer_route import InferHeaders, Reply
from router.triton_http import _Connection
from tnx.errors import ServerError

# Beyond the request's budget, how long to wait for the owner's answer: it answers every
# request by its deadline (a 503 at worst), so only a dead or stopped owner hits this.
MARGIN_S = 1.0
_PASSED = (b"content-type", b"inference-header-content-length", b"retry-after")


def budget_ms(header: bytes) -> float:
    """The milliseconds of budget an `X-TNX-Deadline-Ms` header gives (HttpError 400)."""
    try:
        return float(header)
    except ValueError:
        raise HttpError(400, f"X-TNX-Deadline-Ms {header!r}: not a number") from None


class Forwarder:
    """Keep-alive connections to the other routers, and counts of what went through them."""

    def __init__(self, max_idle: int = 64) -> None:
        self._idle: dict[str, list[_Connection]] = {}
        self._max_idle = max_idle
        self.forwarded = 0  # requests sent on to an owner
        self.failed = 0  # of those, answered 503 owner_unreachable here

    async def forward(
        self, owner: str, path: str, headers: InferHeaders, body: bytes, budget: float
    ) -> Reply:
        """The owner's answer to the request (status, body and content headers passed on),
        `budget` ms before the request's deadline."""
        self.forwarded += 1
        parts = urlsplit(owner)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        lines = [
            f"POST {quote(path)} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode(),
            b"content-length: %d\r\n" % len(body),
            b"x-tnx-deadline-ms: %.3f\r\n" % budget,
        ]
        for name, value in (
            (b"content-type", headers.content_type),
            (b"inference-header-content-length", headers.header_length),
            (b"x-slo-ms", headers.slo_ms),
        ):
            if value is not None:
                lines.append(name + b": " + value + b"\r\n")
        lines += [b"\r\n", body]
        try:
            conn = await self._connection(owner, host, port)
        except ServerError as err:
            return self._unreachable(owner, str(err))
        try:
            status, got, answer = await asyncio.wait_for(
                conn.request(b"".join(lines)), max(budget, 0.0) / 1000.0 + MARGIN_S
            )
        except asyncio.CancelledError:
            conn.abort()  # its answer may still come: nobody else may read it
            raise
        except TimeoutError:
            conn.abort()
            return self._unreachable(owner, "no answer in time")
        except ServerError as err:
            return self._unreachable(owner, str(err))
        idle = self._idle.setdefault(owner, [])
        if not conn.closed and len(idle) < self._max_idle:
            idle.append(conn)
        elif not conn.closed:
            conn.abort()
        return Reply(status, answer, [(k, got[k]) for k in _PASSED if k in got])

    def _unreachable(self, owner: str, why: str) -> Reply:
        self.failed += 1
        return Reply.error(
            503,
            f"request not served: the router owning its GPUs ({owner}) cannot be reached: {why}",
            RETRY,
            reason="owner_unreachable",
        )

    async def _connection(self, owner: str, host: str, port: int) -> _Connection:
        idle = self._idle.get(owner, [])
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Connection, host, port)
        except OSError as err:
            raise ServerError(err.strerror or str(err)) from None
        return conn

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
