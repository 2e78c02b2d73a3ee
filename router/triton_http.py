"""A lean client of Triton's HTTP inference endpoint, for the router's batches.

`POST /v2/models/{model}/infer` with Triton's binary tensor extension both ways
(inputs as raw bytes after the JSON header, `binary_data_output` for every
output), over keep-alive HTTP/1.1 connections that are plain asyncio protocols
parsed by httptools. Measured here against tritonclient's gRPC aio client on a
1-sample batch of a small MLP: 0.6 ms against 1.0 ms a round trip, 0.19 against
0.5 ms of CPU (BENCHMARKS.md), which is most of what the router adds to a request.

One request at a time per connection; a pool keeps the idle ones per server.
A call has no timeout of its own: the driver cancels it at the batch's
deadline, and a cancelled call closes its connection, since its answer may
still arrive on it. Errors: a 400 from Triton is the batch's fault
(`BatchRejectedError`) unless it says the server lacks the model
(`router.triton_errors`); anything else, the connection's included, is a
`ServerError`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import numpy as np

from router import kserve
from router.triton_errors import triton_error
from tnx.errors import ServerError

_HEADER = b"inference-header-content-length"


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "_parser", "_waiter", "_status", "_headers", "_body", "closed")

    def __init__(self) -> None:
        import httptools

        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as err:  # a malformed answer: this connection is done
            self._fail(ServerError(f"malformed HTTP answer: {err}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ServerError(f"connection lost{f': {exc}' if exc else ''}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        status = self._parser.get_status_code()
        headers, self._headers = self._headers, {}
        body = b"".join(self._body)
        self._body = []
        if not self._parser.should_keep_alive():
            self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_result((status, headers, body))

    # use
    def request(self, data: bytes) -> asyncio.Future[tuple[int, dict[bytes, bytes], bytes]]:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, err: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)


class HttpInferClient:
    """Infer calls to one Triton server's HTTP endpoint (`host:port`)."""

    def __init__(self, address: str, max_idle: int = 16) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self._host, self._port = host or "127.0.0.1", int(port)
        self._idle: list[_Connection] = []
        self._max_idle = max_idle

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs for `inputs` (name → array, batch on axis 0)."""
        data = _encode(model, self._host, inputs)
        conn = await self._connection()
        try:
            status, headers, body = await conn.request(data)
        except asyncio.CancelledError:
            conn.abort()  # its answer may still come: nobody else may read it
            raise
        except ServerError as err:
            raise ServerError(f"{self.address}: {model}: {err}") from None
        if not conn.closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        elif not conn.closed:
            conn.abort()
        if status != 200:
            where = f"{self.address}: {model}"
            raise triton_error(
                where, f"HTTP {status}: {_error_message(body)}", refused=status == 400
            )
        return _decode(body, headers.get(_HEADER), f"{self.address}: {model}")

    async def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self._host, self._port)
        except OSError as err:
            raise ServerError(f"{self.address}: {err.strerror or err}") from None
        return conn


def _encode(model: str, host: str, inputs: dict[str, np.ndarray]) -> bytes:
    head, raws = kserve.encode_request(inputs)
    length = len(head) + sum(len(r) for r in raws)
    start = (
        f"POST /v2/models/{quote(model, safe='')}/infer HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(head)}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    return b"".join([start, head, *raws])


def _decode(body: bytes, header_length: bytes | None, where: str) -> dict[str, np.ndarray]:
    try:
        return kserve.decode_response(body, None if header_length is None else int(header_length))
    except (kserve.BadRequest, ValueError) as err:
        raise ServerError(f"{where}: unreadable answer: {err}") from None


def _error_message(body: bytes) -> str:
    try:
        message: Any = json.loads(body).get("error", body[:200])
    except (ValueError, AttributeError):
        message = body[:200]
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    lines = str(message).strip().splitlines()
    return lines[0] if lines else ""
