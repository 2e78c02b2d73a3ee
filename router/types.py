"""The contract every router piece plugs into: requests, policy actions, outcomes.

The batching/drop policy (`router.policy`) is a synchronous state machine
(STYLE.md): events go in with the current time `now` (milliseconds, a plain
float), and it answers with a list of actions:

    Dispatch(gpu, session, model, requests, ...)  run this batch on this GPU now
    Drop(request, reason)                         answer this request at once, unserved
    WakeAt(time)                                  call `timer(now)` at or after `time`

Two drivers execute the actions: `router.simulator` on a virtual clock and
`router.driver` under asyncio against a real `Backend`. Drivers hand each
request one final `Outcome`: `Answered` (a result) or `Dropped` (a reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

DropMode = Literal["early", "lazy", "none"]
"""`early`: Nexus sliding window; `lazy`: drop only what has expired; `none`: never."""

DROP_MODES: Final[tuple[str, ...]] = ("early", "lazy", "none")

# Drop reasons. Strings, not an enum, so they go straight into HTTP bodies and
# Prometheus labels.
DEADLINE: Final = "deadline"  # still alive, but cannot finish before its deadline
EXPIRED: Final = "expired"  # deadline already passed while queued
SERVER_DOWN: Final = "server_down"  # its GPU failed and no other GPU can take it in time
NO_SERVER: Final = "no_server"  # arrived while every GPU of its session was down
NO_SESSION: Final = "no_session"  # unknown session, or its session left the plan
TOO_LARGE: Final = "too_large"  # more samples than any batch its GPUs can run
REJECTED: Final = "rejected"  # the server refused the batch's inputs (GPU is healthy)
SHUTTING_DOWN: Final = "shutting_down"  # the router is stopping

BatchStatus = Literal["ok", "failed", "rejected"]
"""How a dispatched batch ended: `failed` marks the GPU down, `rejected` does not."""


@dataclass(slots=True, eq=False)
class Request:
    """One inference request. The policy never looks inside `payload`.

    `n_samples` counts the samples the request carries on axis 0; they count
    toward the batch size. `attempts` counts the batches it was in that failed
    (the policy retries a request once). Identity is the object itself
    (eq=False), so two requests with equal fields are still two requests.
    """

    id: int | str
    session: str
    arrival: float
    deadline: float
    n_samples: int = 1
    payload: Any = None
    attempts: int = 0
    # The driver's own index for it (the simulator's row in its table of outcomes: a list
    # index where a dict of 600,000 requests cost a tenth of a simulation). Policies ignore it.
    slot: int = -1


# The records made per request or per batch (Dispatch, Drop, Answered, Dropped) write their
# own __init__: compiled (router.native), a dataclass's generated one stays interpreted and
# costs twice as much per object, three and a half times frozen; they are not frozen for
# the same reason, and nothing changes them once made.


@dataclass(slots=True, eq=False, init=False)
class Dispatch:
    """Run `requests` (earliest deadline first) as one batch on `gpu`.

    The driver reports the end with `policy.batch_done(now, gpu, batch_id, status)`.
    `expected_ms` is the policy's corrected estimate l(n_samples) on this GPU.

    A prefix batch (`router.prefix_batch`) has `suffixes`: `model` is then the shared
    prefix, run on all the requests, and each (suffix model, k) runs on the next k
    requests the prefix's outputs, on the same GPU; `expected_ms` covers the whole path.
    """

    gpu: str
    session: str
    model: str
    requests: tuple[Request, ...]
    batch_id: int
    n_samples: int
    expected_ms: float
    suffixes: tuple[tuple[str, int], ...]

    def __init__(
        self,
        gpu: str,
        session: str,
        model: str,
        requests: tuple[Request, ...],
        batch_id: int,
        n_samples: int,
        expected_ms: float,
        suffixes: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.gpu = gpu
        self.session = session
        self.model = model
        self.requests = requests
        self.batch_id = batch_id
        self.n_samples = n_samples
        self.expected_ms = expected_ms
        self.suffixes = suffixes


@dataclass(slots=True, eq=False, init=False)
class Drop:
    request: Request
    reason: str

    def __init__(self, request: Request, reason: str) -> None:
        self.request = request
        self.reason = reason


@dataclass(slots=True, frozen=True)
class WakeAt:
    """Call `timer` at or after `time`; a newer WakeAt replaces any earlier one."""

    time: float


Action = Dispatch | Drop | WakeAt


@dataclass(slots=True, eq=False, init=False)
class Answered:
    """A request served: `result` is the backend's slice for it."""

    request: Request
    result: Any
    gpu: str
    dispatched: float
    finished: float

    def __init__(
        self, request: Request, result: Any, gpu: str, dispatched: float, finished: float
    ) -> None:
        self.request = request
        self.result = result
        self.gpu = gpu
        self.dispatched = dispatched
        self.finished = finished

    @property
    def late(self) -> bool:
        return self.finished > self.request.deadline

    @property
    def latency_ms(self) -> float:
        return self.finished - self.request.arrival


@dataclass(slots=True, eq=False, init=False)
class Dropped:
    """A request answered without service; `reason` is one of the constants above."""

    request: Request
    reason: str
    at: float
    detail: str

    def __init__(self, request: Request, reason: str, at: float, detail: str = "") -> None:
        self.request = request
        self.reason = reason
        self.at = at
        self.detail = detail


Outcome = Answered | Dropped
