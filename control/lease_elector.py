"""Leader election's I/O: the `control.leader` decision around the Lease API
(coordination.k8s.io/v1 through the `kubernetes` client's CoordinationV1Api).

Every `retry_s` the elector reads the Lease, decides, and writes what it decided
(create, or replace conditional on the resourceVersion read). It calls
`on_elected` when a write makes it the holder and `on_deposed` when it stops being
one: another replica holds the Lease, or it has not renewed for `renew_deadline_s`
(the API server unreachable, its writes refused), shorter than the lease duration so
that it stops acting before another replica may take over. A leader wakes at its
deadline at the latest, and a renewal still in flight then does not hold it up.
`release` gives the Lease up (no holder) on shutdown, so a standby takes over at its
next read rather than a lease duration later. Blocking client calls run in threads;
each has a timeout of one retry period. `AlwaysLeader` is the elector of a single
replica (no `--lease`).

The client's errors are translated here: an ApiException is a failed attempt (logged,
tried again), never an exception out of `run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from control.clock import Clock, RealClock
from control.leader import (
    Action,
    LeaseRecord,
    Seen,
    check_timing,
    claim,
    deadline,
    decide,
    held,
    observe,
    released,
)
from tnx.errors import UserInputError

log = logging.getLogger(__name__)
Callback = Callable[[], Awaitable[None]]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def micro_time(t: dt.datetime) -> dt.datetime:
    """`t` as a MicroTime the API server parses: the client writes `isoformat()`, which
    drops the fraction when it is zero, and MicroTime requires six digits of it."""
    return t if t.microsecond else t.replace(microsecond=1)


class AlwaysLeader:
    """One replica, no Lease: the leader from the start."""

    leader = True
    holder: str | None = None

    async def run(self, on_elected: Callback, on_deposed: Callback) -> None:
        await on_elected()
        await asyncio.Event().wait()

    async def release(self, hold_off_s: float = 0.0) -> None:
        pass


class LeaseElector:
    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_s: float = 2.0,
        clock: Clock | None = None,
        wall: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        from kubernetes import client

        if why := check_timing(duration_s, renew_deadline_s, retry_s):
            raise UserInputError(f"--lease {namespace}/{name}: {why}")
        if not identity:
            raise UserInputError("--identity must not be empty")
        self._client = client
        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration_s, self.renew_deadline_s, self.retry_s = duration_s, renew_deadline_s, retry_s
        self.clock = clock or RealClock()
        self._wall = wall
        self._seen: Seen | None = None
        self._renewed_at: float | None = None
        self._sit_out_until = -float("inf")
        self.leader = False
        self.holder: str | None = None

    # ---- the API calls (blocking; run in threads) -----------------------------------

    def _read(self) -> LeaseRecord | None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.retry_s
            )
        except self._client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return LeaseRecord.of(lease)

    def _body(self, rec: LeaseRecord) -> Any:
        c = self._client
        return c.V1Lease(
            metadata=c.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=rec.version
            ),
            spec=c.V1LeaseSpec(
                holder_identity=rec.holder,
                # Whole seconds in the API: rounded up, so a standby waits no less.
                lease_duration_seconds=math.ceil(rec.duration_s),
                acquire_time=rec.acquire_time,
                renew_time=rec.renew_time,
                lease_transitions=rec.transitions,
            ),
        )

    def _write(self, rec: LeaseRecord, create: bool) -> LeaseRecord:
        body, timeout = self._body(rec), self.retry_s
        if create:
            lease = self._api.create_namespaced_lease(
                self.namespace, body, _request_timeout=timeout
            )
        else:
            lease = self._api.replace_namespaced_lease(
                self.name, self.namespace, body, _request_timeout=timeout
            )
        return LeaseRecord.of(lease)

    # ---- the loop -------------------------------------------------------------------

    async def step(self) -> Action | None:
        """Read, decide, write once; the action taken (None: the attempt failed)."""
        now = self.clock.now()
        try:
            self._seen = observe(self._seen, await asyncio.to_thread(self._read), now)
            d = decide(self._seen, self.identity, now)
            self.holder = d.holder
            if d.action is Action.WAIT or now < self._sit_out_until:
                return Action.WAIT
            prev = self._seen.record if self._seen else None
            rec = claim(prev, self.identity, self.duration_s, micro_time(self._wall()))
            written = await asyncio.to_thread(self._write, rec, prev is None)
        except self._client.ApiException as err:
            # 409: another replica wrote first (a stale resourceVersion, or it created the
            # Lease); the next read shows what it wrote.
            log.log(
                logging.INFO if err.status == 409 else logging.WARNING,
                "lease %s/%s: %s %s",
                self.namespace,
                self.name,
                err.status,
                err.reason,
            )
            return None
        except Exception as err:  # the API server unreachable: urllib3's errors, timeouts
            log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            return None
        self._seen = observe(self._seen, written, now)
        self._renewed_at, self.holder = now, self.identity
        if d.action is not Action.RENEW:
            log.warning(
                "lease %s/%s: %s (was %s) as %s",
                self.namespace,
                self.name,
                d.action,
                d.holder,
                self.identity,
            )
        return d.action

    async def run(self, on_elected: Callback, on_deposed: Callback) -> None:
        """Campaign and hold the Lease until cancelled."""
        while True:
            if self.leader:  # a slow API call must not keep a leader acting past its deadline
                budget = deadline(self._renewed_at, self.renew_deadline_s) - self.clock.now()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.step(), max(0.0, budget))
            else:
                await self.step()
            now = self.clock.now()
            leads = self.holder == self.identity and held(
                self._renewed_at, now, self.renew_deadline_s
            )
            if leads and not self.leader:
                self.leader = True
                await on_elected()
            elif self.leader and not leads:
                self.leader = False
                log.warning(
                    "lease %s/%s lost (holder %s): stepping down",
                    self.namespace,
                    self.name,
                    self.holder,
                )
                await on_deposed()
            wake = self.clock.now() + self.retry_s
            if self.leader:
                wake = min(wake, deadline(self._renewed_at, self.renew_deadline_s))
            await self.clock.sleep(max(0.0, wake - self.clock.now()))

    async def release(self, hold_off_s: float = 0.0) -> None:
        """Give the Lease up if this replica holds it, and campaign again only after
        `hold_off_s` (a replica that could not start its term lets another try)."""
        self._sit_out_until = self.clock.now() + hold_off_s
        if not self.leader and self.holder != self.identity:
            return
        self.leader = False
        rec = self._seen.record if self._seen else None
        if rec is None or rec.holder != self.identity:
            return
        with contextlib.suppress(Exception):  # best effort: else it expires on its own
            written = await asyncio.to_thread(
                self._write, released(rec, micro_time(self._wall())), False
            )
            self._seen = observe(self._seen, written, self.clock.now())
            self.holder = None
            log.warning("lease %s/%s released by %s", self.namespace, self.name, self.identity)
