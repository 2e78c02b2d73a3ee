"""The router's HTTP error answers, each a KServe error body `{"error": message, ...}`.

    Exception
     ├── HttpError ........ raised below a route: its status, message, headers, body fields
     └── UserInputError (tnx.errors)
          └── BadRequest .. (router.kserve) a malformed body, or one that does not fit the model: 400

Both the infer route (`router.infer_route`) and the FastAPI app answer them. The
answers the router gives (DESIGN.md, "Router HTTP") are built here: a model no
plan names is 404; a known model with no placement now, or whose servers do not
answer, 503 with a `reason`; a request the policy dropped 503 with `Retry-After`
(400 when it was the request's own fault); a body over the limit 413.
"""

from __future__ import annotations

import json
from typing import Any

from router.types import NO_SESSION, REJECTED, TOO_LARGE

RETRY = {"Retry-After": "1"}
# Drop reasons that are the request's own fault; every other drop is a 503.
_CLIENT_FAULTS = {TOO_LARGE: 400, REJECTED: 400}
_DROPPED = {
    "deadline": "cannot be served within its SLO",
    "expired": "its deadline passed while it waited",
    "server_down": "its server failed and no other could serve it in time",
    "no_server": "no server of its session is up",
    "shutting_down": "the router is shutting down",
    "overloaded": "the router holds as many requests as it may",
    NO_SESSION: "its session is not in the plan now",
    TOO_LARGE: "it carries more samples than any planned batch can hold",
    REJECTED: "the server refused its inputs",
}


class HttpError(Exception):
    """An answer other than 200, raised anywhere below a route: status, message, headers and
    extra fields of the `{"error": message, ...}` body."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra

    def body(self) -> bytes:
        return error_body(self.message, **self.extra)


def error_body(message: str, **extra: Any) -> bytes:
    """A KServe error body, `{"error": message, ...}`."""
    return json.dumps({"error": message, **extra}).encode()


def unknown_model(model: str) -> HttpError:
    return HttpError(404, f"unknown model '{model}': no plan names it")


def no_placement(model: str) -> HttpError:
    return HttpError(
        503,
        f"model '{model}' has no placement now: the plan serves no session of it",
        headers=RETRY,
        reason="no_placement",
    )


def no_server(model: str, what: str, errors: list[str]) -> HttpError:
    """The 503 for a model none of whose servers answered `what` (metadata, config)."""
    return HttpError(
        503,
        f"model '{model}': no server answered its {what}: "
        + "; ".join(errors or ["no GPU of the plan holds it"]),
        reason="no_server",
    )


def dropped(model: str, reason: str, detail: str = "") -> HttpError:
    """The answer to a request the router did not serve, for the drop `reason`."""
    status = _CLIENT_FAULTS.get(reason, 503)
    text = _DROPPED.get(reason, reason)
    return HttpError(
        status,
        f"request to '{model}' not served: {text}" + (f" ({detail})" if detail else ""),
        RETRY if status == 503 else None,
        reason=reason,
    )


def too_large(limit: int, length: int | None = None) -> HttpError:
    what = "request body" if length is None else f"request body of {length} bytes"
    return HttpError(413, f"{what} exceeds the limit of {limit} bytes")
