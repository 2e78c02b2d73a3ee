"""The infer route as a raw ASGI endpoint: the router's hot path.

`POST /v2/models/{model}[/versions/{v}]/infer` is answered here, in front of
FastAPI: no middleware stack, no routing table, no `Request` object, headers
read straight from the ASGI scope, the body pulled from `receive` only once
the request is admitted. Everything else goes on to the FastAPI app. Profiling
under load (issue 8) put FastAPI's middleware and routing at about a third of
the router's CPU per request; see BENCHMARKS.md for what this saves.

Every request is answered exactly once: a result, a 503 with a reason and
`Retry-After`, or a 4xx saying what was wrong; an unexpected error is a 500
with its message, logged. A client that disconnects before its body is read
gets nothing and costs nothing: it was never queued.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from router.http_errors import HttpError, error_body
from router.kserve import BadRequest

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PREFIX = "/v2/models/"
_SUFFIX = "/infer"
_JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected before its body was read."""


@dataclass(slots=True)
class InferHeaders:
    """The request headers the infer route reads (raw bytes, as ASGI gives them), and its
    path (what a forward to another router posts to)."""

    path: str = ""
    content_length: bytes | None = None
    header_length: bytes | None = None  # Inference-Header-Content-Length
    slo_ms: bytes | None = None  # X-SLO-Ms
    content_type: bytes | None = None
    deadline_ms: bytes | None = None  # X-TNX-Deadline-Ms: forwarded by a router, budget left

    @classmethod
    def of(cls, scope: Scope) -> InferHeaders:
        h = cls(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                h.content_length = value
            elif name == b"inference-header-content-length":
                h.header_length = value
            elif name == b"x-slo-ms":
                h.slo_ms = value
            elif name == b"content-type":
                h.content_type = value
            elif name == b"x-tnx-deadline-ms":
                h.deadline_ms = value
        return h


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]

    @classmethod
    def error(
        cls, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> Reply:
        """A KServe error body, `{"error": message, ...}`, as JSON."""
        h = [(b"content-type", _JSON)]
        if headers:
            h.extend((k.lower().encode(), v.encode()) for k, v in headers.items())
        return cls(status, error_body(message, **extra), h)

    @classmethod
    def of(cls, err: HttpError) -> Reply:
        return cls.error(err.status, err.message, err.headers, **err.extra)


def infer_model(path: str) -> str | None:
    """The model of an infer path (`/v2/models/{m}/infer`, `/v2/models/{m}/versions/{v}/infer`)."""
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    middle = path[len(_PREFIX) : -len(_SUFFIX)]
    if not middle:
        return None
    if "/" not in middle:
        return middle
    model, sep, version = middle.partition("/versions/")
    if sep and model and version and "/" not in model and "/" not in version:
        return model
    return None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes; ClientGone on a disconnect."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = reply.headers
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


InferHandler = Callable[[str, InferHeaders, Receive], Awaitable[Reply]]


async def serve_infer(handle: InferHandler, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer `scope` with `handle(model, headers, receive)` if it is an infer request (True);
    leave it to the caller otherwise (False)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    model = infer_model(scope["path"])
    if model is None:
        return False
    try:
        reply = await handle(model, InferHeaders.of(scope), receive)
    except HttpError as err:
        reply = Reply.of(err)
    except BadRequest as err:
        reply = Reply.error(400, str(err))
    except ClientGone:
        reply = Reply(400, b"", [])  # nobody reads it
    except Exception as err:  # answered all the same: exactly one answer per request
        log.exception("infer %s failed", model)
        reply = Reply.error(500, f"request to '{model}' failed in the router: {err}")
    await send_reply(send, reply)
    return True
