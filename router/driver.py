"""The asyncio driver of the batching policy: futures per request, one task per batch.

`AsyncRouter` feeds `router.policy.BatchPolicy` the events of a live router
(arrivals from `submit`, ends of batches, timers, GPU down/up, plan switches)
and carries out its actions against a `Backend` (`router.backend`), of which it
calls `infer` alone. Every submitted request resolves exactly once, to
`Answered` or `Dropped`, also when the router shuts down.

A backend exception or a batch past its timeout marks the GPU down (the
policy retries the batch's requests once on another GPU, or drops them); an
optional async `health` probe then polls the GPU and brings it back with
`mark_up`. A backend that raises `BatchRejectedError` says the inputs were
refused by a healthy server: the batch's requests are dropped `rejected` and
the GPU stays up.

Every call carries a deadline derived from the batch's own (`batch_timeout_ms`):
a server that is dead, stopped (SIGSTOP) or stuck in a model is found by the
first batch sent to it, one SLO later, never a fixed number of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from control.types import Plan
from router.backend import Backend, BatchRejectedError
from router.clock import Clock, LoopClock, Timer
from router.policy import BatchPolicy
from router.prefix_batch import run_path
from router.types import (
    SHUTTING_DOWN,
    Action,
    Answered,
    BatchStatus,
    Dispatch,
    Drop,
    Dropped,
    Outcome,
    Request,
    WakeAt,
)

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True, eq=False)
class BatchEnded:
    """Reported to `on_event` when a batch comes back (for metrics: sizes, busy time)."""

    dispatch: Dispatch
    status: BatchStatus
    started: float
    finished: float
    error: str = ""


@dataclass(slots=True, frozen=True)
class GpuUp:
    """Reported to `on_event` when a GPU that was down is taken back into service."""

    gpu: str


Event = Action | BatchEnded | GpuUp
HealthProbe = Callable[[str], Awaitable[bool]]

# The grace is at least this, and at least l(b): one slow batch on a noisy machine
# (a GC pause, a page fault, two cores shared with the servers) must not take a
# healthy server out of service.
MIN_GRACE_MS = 50.0
# The grace of a GPU's first batch of a model, at start and after each failure: it pays
# for what a server does once (the model's first run, a new connection, the router's
# first metadata fetch eating into the request's SLO). With 50 ms, the first request to
# a fresh router (SLO 200 ms, two shared cores) timed out and took its server down.
COLD_GRACE_MS = 1000.0


def batch_timeout_ms(
    d: Dispatch, started: float, factor: float = 2.0, grace_ms: float = MIN_GRACE_MS
) -> float:
    """How long the batch `d`, sent at `started`, may take before its server counts as failed:
    max(latest deadline of its requests - started, factor x l(b)) + max(grace_ms, l(b)).

    Past its last deadline no request of the batch can be on time any more, so waiting
    longer only keeps the GPU's next batches waiting on a server that may be gone;
    `factor` x l(b) covers a batch sent already late (drop mode `none`, a probe).
    """
    latest = max(r.deadline for r in d.requests)
    return max(latest - started, factor * d.expected_ms) + max(grace_ms, d.expected_ms)


class AsyncRouter:
    """Drive `policy` under asyncio against `backend`.

    - `clock`: where time comes from (`LoopClock()` = time.monotonic in ms).
    - `health`: `async (gpu) -> bool`, polled every `probe_interval_ms` while a GPU
      is down; True brings it back. Without it, only `mark_up` does.
    - Batch timeout: `batch_timeout_ms(dispatch, started, timeout_factor, grace_ms)`,
      with `cold_grace_ms` instead for a GPU's first batch of a model (since start or
      its last failure); a timeout is a failure (GPU down, requests retried once or dropped).
    - `on_event(now, event)`: sees every Dispatch, Drop, WakeAt, BatchEnded and GpuUp.

    All methods must be called from the event loop's thread.
    """

    def __init__(
        self,
        policy: BatchPolicy,
        backend: Backend,
        *,
        clock: Clock | None = None,
        health: HealthProbe | None = None,
        probe_interval_ms: float = 500.0,
        timeout_factor: float = 2.0,
        grace_ms: float = MIN_GRACE_MS,
        cold_grace_ms: float = COLD_GRACE_MS,
        on_event: Callable[[float, Event], None] | None = None,
    ) -> None:
        self.policy = policy
        self._backend = backend
        self._clock: Clock = clock or LoopClock()
        self._health = health
        self._probe_interval = probe_interval_ms
        self._timeout_factor = timeout_factor
        self._grace = grace_ms
        self._cold_grace = max(grace_ms, cold_grace_ms)
        # (gpu, model) that answered a batch since the GPU last failed: they are warm.
        self._warm: set[tuple[str, str]] = set()
        self._on_event = on_event
        self._futures: dict[Request, asyncio.Future[Outcome]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._timer: Timer | None = None
        self._ids = itertools.count()
        # Why a batch's requests were refused, for the Dropped.detail of those requests.
        self._detail: dict[Request, str] = {}

    # ---- public API -----------------------------------------------------------------

    def now(self) -> float:
        return self._clock.now()

    def request(
        self,
        session: str,
        payload: Any = None,
        n_samples: int = 1,
        arrival: float | None = None,
        reserve_ms: float = 0.0,
    ) -> Request:
        """A Request with a fresh id, arriving now (or at `arrival`, when it reached the
        router before its body was read), its deadline the session's SLO later, less
        `reserve_ms` kept back for writing the answer, which the policy does not see."""
        now = self._clock.now() if arrival is None else arrival
        r = self.policy.request(next(self._ids), session, now, payload, n_samples)
        r.deadline -= reserve_ms
        return r

    def submit(self, request: Request) -> asyncio.Future[Outcome]:
        """Queue `request`; the future resolves once, to Answered or Dropped.

        If the caller stops waiting (cancels the future), the request still runs
        its course in the policy; only its answer is discarded.
        """
        if request in self._futures:
            raise ValueError(f"request {request.id} submitted twice")
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._futures[request] = fut
        try:
            actions = self.policy.arrival(self._clock.now(), request)
        except BaseException:
            del self._futures[request]  # refused outright: the caller gets the exception
            raise
        self._apply(actions)
        return fut

    async def infer(self, session: str, payload: Any = None, n_samples: int = 1) -> Outcome:
        """`submit(request(...))` and wait for the outcome."""
        return await self.submit(self.request(session, payload, n_samples))

    def mark_down(self, gpu: str) -> None:
        self._apply(self.policy.mark_down(self._clock.now(), gpu))
        self._start_probe(gpu)

    def mark_up(self, gpu: str) -> None:
        probe = self._probes.pop(gpu, None)
        if probe is not None and probe is not asyncio.current_task():
            probe.cancel()
        was_down = not self.policy.is_up(gpu)
        now = self._clock.now()
        self._apply(self.policy.mark_up(now, gpu))
        if was_down:
            self._emit(now, GpuUp(gpu))

    def switch_plan(self, plan: Plan) -> None:
        """Install a new plan (raises UserInputError, changing nothing, if it is invalid)."""
        self._apply(self.policy.switch_plan(self._clock.now(), plan))

    def pending(self) -> int:
        """Requests submitted and not yet answered."""
        return len(self._futures)

    async def shutdown(self, grace_ms: float = 5000.0) -> None:
        """Drop the queue `shutting_down`, let batches in flight finish for up to
        `grace_ms`, then answer whatever is left `shutting_down` too."""
        self._apply(self.policy.shutdown(self._clock.now()))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for probe in self._probes.values():
            probe.cancel()
        self._probes.clear()
        if self._tasks and grace_ms > 0:
            loop = asyncio.get_running_loop()
            expired = loop.create_future()
            timer = self._clock.call_at(
                self._clock.now() + grace_ms, lambda: expired.done() or expired.set_result(None)
            )
            while self._tasks and not expired.done():
                await asyncio.wait({*self._tasks, expired}, return_when=asyncio.FIRST_COMPLETED)
            timer.cancel()
        if self._tasks:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
        now = self._clock.now()
        for r in list(self._futures):
            self._resolve(r, Dropped(r, SHUTTING_DOWN, now))

    # ---- internals ------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        if not actions:
            return
        now = self._clock.now()
        for a in actions:
            self._emit(now, a)
            if isinstance(a, Dispatch):
                task = asyncio.get_running_loop().create_task(self._run_batch(a, now))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(a, Drop):
                detail = self._detail.pop(a.request, "")
                self._resolve(a.request, Dropped(a.request, a.reason, now, detail))
            elif isinstance(a, WakeAt):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self._clock.call_at(a.time, self._on_timer)

    def _emit(self, now: float, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(now, event)
        except Exception:  # a broken metrics hook must not cost a request its answer
            log.exception("on_event hook failed")

    def _on_timer(self) -> None:
        self._timer = None
        self._apply(self.policy.timer(self._clock.now()))

    def _resolve(self, r: Request, outcome: Outcome) -> None:
        fut = self._futures.pop(r, None)
        self._detail.pop(r, None)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    async def _run_batch(self, d: Dispatch, started: float) -> None:
        # The backend runs in this task (no inner task): a timeout cancels the task itself.
        task = asyncio.current_task()
        assert task is not None
        timed_out = False

        def on_timeout() -> None:
            nonlocal timed_out
            timed_out = True
            task.cancel()

        warm = (d.gpu, d.model) in self._warm
        grace = self._grace if warm else self._cold_grace
        budget = batch_timeout_ms(d, started, self._timeout_factor, grace)
        timer = self._clock.call_at(started + budget, on_timeout)
        status: BatchStatus = "ok"
        error = ""
        results: Sequence[Any] = ()
        try:
            left_s = max(started + budget - self._clock.now(), 1.0) / 1000.0
            if d.suffixes:  # a prefix batch, then its suffixes (router.prefix_batch)
                results = await run_path(self._backend, d, timeout_s=left_s)
            else:
                results = await self._backend.infer(d.gpu, d.model, d.requests, timeout_s=left_s)
        except asyncio.CancelledError:
            if not timed_out:
                raise  # we are being cancelled ourselves (shutdown)
            task.uncancel()
            status, error = "failed", f"{d.gpu}: batch timed out after {budget:.0f} ms"
        except BatchRejectedError as exc:
            status, error = "rejected", f"{d.gpu}: {exc}"
        except Exception as exc:
            status, error = "failed", f"{d.gpu}: {exc}"
        else:
            if len(results) != len(d.requests):
                status = "failed"
                error = f"{d.gpu}: {len(results)} results for {len(d.requests)} requests"
        finally:
            timer.cancel()
        now = self._clock.now()
        if status != "ok":
            log.warning("batch %d on %s %s: %s", d.batch_id, d.gpu, status, error)
        self._emit(now, BatchEnded(d, status, started, now, error))
        if status == "failed":
            # A server that comes back may have been restarted: every model cold again.
            self._warm = {w for w in self._warm if w[0] != d.gpu}
        else:
            self._warm.add((d.gpu, d.model))
        if status == "ok":
            for r, result in zip(d.requests, results, strict=True):
                self._resolve(r, Answered(r, result, d.gpu, started, now))
        elif status == "rejected":
            for r in d.requests:
                self._detail[r] = error
        actions = self.policy.batch_done(now, d.gpu, d.batch_id, status)
        self._apply(actions)
        if status == "failed":
            self._start_probe(d.gpu)

    def _start_probe(self, gpu: str) -> None:
        if self._health is None or self.policy.closed or gpu in self._probes:
            return
        self._probes[gpu] = asyncio.get_running_loop().create_task(self._probe(gpu))

    async def _probe(self, gpu: str) -> None:
        loop = asyncio.get_running_loop()
        assert self._health is not None
        while True:
            tick = loop.create_future()
            self._clock.call_at(
                self._clock.now() + self._probe_interval,
                lambda f=tick: f.done() or f.set_result(None),
            )
            await tick
            try:
                healthy = await self._health(gpu)
            except Exception as exc:  # a failing probe just means "not yet"
                log.debug("health probe of %s failed: %s", gpu, exc)
                healthy = False
            if healthy:
                self._probes.pop(gpu, None)
                self.mark_up(gpu)
                return
