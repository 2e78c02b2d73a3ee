"""The router's seam to its servers: the `Backend` protocol (httpx's transport pattern).

The asyncio driver (`router.driver`) calls `infer`, one batch on one GPU; the HTTP
layer (`router.app`, `router.extensions`) asks for a model's metadata and
configuration, probes a down GPU with `ready`, hands over a new fleet with
`set_fleet` and closes the backend at shutdown. `router.triton_backend.TritonBackend`
implements it against Triton; `router.testing.StubBackend` and `FakeBackend` in tests.

Errors: a backend raises `ServerError` (from `tnx.errors`) for a server that failed
or does not answer, and `BatchRejectedError` for a batch whose inputs a healthy
server refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from model_repo_tools.fleet import Fleet
from router.types import Request
from tnx.errors import ServerError


class BatchRejectedError(ServerError):
    """The server refused this batch's inputs; the server itself is healthy."""


class Backend(Protocol):
    async def infer(
        self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
    ) -> Sequence[Any]:
        """Run one batch on one GPU and return one result per request, in order.

        The Triton backend concatenates the requests' inputs on axis 0 (each request
        contributes `n_samples` rows), calls the server once and splits the answer back.
        Raise `BatchRejectedError` when the server refuses the inputs; any other
        exception counts as a server failure. `timeout_s` is the time left for the call;
        a backend hands it to its transport (gRPC's deadline) where it can. The driver
        cancels the call at that time anyway.
        """
        ...

    async def ready(self, gpu: str, models: Iterable[str] = ()) -> bool:
        """Whether the GPU's server is live and each of `models` ready on it (the probe
        that brings a down GPU back); False, not an exception, when it cannot tell."""
        ...

    async def metadata(self, gpu: str, model: str) -> tuple[dict[str, Any], int]:
        """(the model's metadata as Triton's HTTP JSON, its max_batch_size) from the GPU's
        server; ServerError when it does not answer."""
        ...

    async def model_config(self, gpu: str, model: str) -> dict[str, Any]:
        """The model's configuration as Triton's HTTP endpoint gives it, a copy the caller
        owns; ServerError when the server does not answer."""
        ...

    def set_fleet(self, fleet: Fleet) -> None:
        """Adopt a new fleet (the servers behind the GPU ids may have changed)."""
        ...

    async def close(self) -> None:
        """Release connections; the backend is not used again."""
        ...
