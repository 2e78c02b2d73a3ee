"""What a Triton error answer means for the router: a refused batch, or a failed server.

A refusal of the inputs (bad shape, wrong datatype, batch too large) is the
request's fault: `BatchRejectedError`, the GPU stays up. Everything else is a
`ServerError`: the GPU goes down and the batch's requests are retried on
another. Triton answers both kinds with the same codes in places, so the
message decides too: a server that lost the model (restarted empty, unloaded)
answers, depending on its version, HTTP 404 or 400 and gRPC NOT_FOUND,
UNAVAILABLE or INVALID_ARGUMENT, with one of these texts (Triton core,
model_lifecycle.cc):

    Request for unknown model: 'm' is not found
    Request for unknown model: 'm' has no available versions
    'm' version 1 is not at ready state
"""

from __future__ import annotations

from router.backend import BatchRejectedError
from tnx.errors import ServerError

# Lower-case pieces of the messages of a server without the model (see above), and of
# one that is shutting down or not ready yet.
_MODEL_GONE = (
    "unknown model",
    "no available versions",
    "is not found",
    "not at ready state",
    "not ready",
    "unavailable",
)


def model_gone(message: str) -> bool:
    """Whether a Triton error message says the server lacks the model or is not ready."""
    text = message.lower()
    return any(piece in text for piece in _MODEL_GONE)


def triton_error(where: str, message: str, *, refused: bool) -> ServerError:
    """The error for a Triton answer `message` at `where` ("server: model"); `refused`
    when its code reads as a refusal of the inputs (HTTP 400, gRPC INVALID_ARGUMENT)."""
    if refused and not model_gone(message):
        return BatchRejectedError(f"{where}: {message}")
    return ServerError(f"{where}: {message}")
