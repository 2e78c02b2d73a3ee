"""Leader election on a coordination.k8s.io Lease, the decision (pure): client-go's
`leaderelection` package (the one kube-controller-manager and kube-scheduler run), for
the control plane's replicas.

Every `retry_s` a replica reads the Lease and decides, at `now` on its own clock:

    no Lease yet                                    → ACQUIRE (create it, holding it)
    it holds the Lease                              → RENEW (write renewTime)
    nobody holds it (released)                      → TAKE_OVER
    another holds it, its record unchanged for a
      full leaseDurationSeconds by this replica's
      clock                                         → TAKE_OVER
    another holds it and renewed since              → WAIT

Expiry is measured from when this replica saw the record change, not from the
renewTime the holder wrote, as client-go does: two nodes' clocks may disagree, and a
replica that has just started waits a full lease duration before it takes over. The
holder steps down when it has not renewed for `renew_deadline_s` (shorter than the
lease duration, `held`), so it stops acting before any other replica may take over.
A write is conditional on the resourceVersion read (the API server answers 409 to a
stale one), so two replicas that decide to take over at once cannot both succeed.

`LeaseRecord.of` reads the client's `V1Lease` by attribute (the client is imported
only by the I/O, `control.lease_elector`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    ACQUIRE = "acquire"
    RENEW = "renew"
    WAIT = "wait"
    TAKE_OVER = "take over"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What a Lease's spec says (and the resourceVersion a write is conditional on)."""

    holder: str | None
    duration_s: float
    renew_time: dt.datetime | None = None
    acquire_time: dt.datetime | None = None
    transitions: int = 0
    version: str | None = None  # metadata.resourceVersion; not part of the record's identity

    @classmethod
    def of(cls, lease: Any) -> LeaseRecord:
        """From a `kubernetes.client.V1Lease`."""
        spec = lease.spec
        return cls(
            holder=(spec.holder_identity or None) if spec else None,
            duration_s=float((spec.lease_duration_seconds if spec else None) or 0),
            renew_time=spec.renew_time if spec else None,
            acquire_time=spec.acquire_time if spec else None,
            transitions=int((spec.lease_transitions if spec else None) or 0),
            version=lease.metadata.resource_version if lease.metadata else None,
        )

    def same(self, other: LeaseRecord) -> bool:
        """Unchanged, as an observer tells: the version aside (it changes on every write)."""
        return replace(self, version=None) == replace(other, version=None)


@dataclass(frozen=True, slots=True)
class Seen:
    """A Lease record and when this replica first saw it as it is."""

    record: LeaseRecord
    at: float


def observe(prev: Seen | None, record: LeaseRecord | None, now: float) -> Seen | None:
    """What the replica knows after reading `record` at `now` (None: there is no Lease)."""
    if record is None:
        return None
    if prev is not None and prev.record.same(record):
        return Seen(record, prev.at)  # the newer version, seen unchanged since `prev.at`
    return Seen(record, now)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    holder: str | None  # who leads, as far as this replica knows
    expires_at: float = math.inf  # WAIT: when the holder's term runs out unless it renews


def decide(seen: Seen | None, me: str, now: float) -> Decision:
    """What a replica named `me` does at `now`, having seen the Lease as `seen`."""
    if seen is None:
        return Decision(Action.ACQUIRE, None)
    rec = seen.record
    if rec.holder == me:
        return Decision(Action.RENEW, me)
    if rec.holder is None:
        return Decision(Action.TAKE_OVER, None)
    expires = seen.at + rec.duration_s
    if now >= expires:
        return Decision(Action.TAKE_OVER, rec.holder)
    return Decision(Action.WAIT, rec.holder, expires)


def claim(prev: LeaseRecord | None, me: str, duration_s: float, wall: dt.datetime) -> LeaseRecord:
    """The record `me` writes to acquire, take over or renew the Lease at `wall`."""
    if prev is not None and prev.holder == me:
        return replace(prev, duration_s=duration_s, renew_time=wall)
    return LeaseRecord(
        holder=me,
        duration_s=duration_s,
        renew_time=wall,
        acquire_time=wall,
        transitions=0 if prev is None else prev.transitions + 1,
        version=None if prev is None else prev.version,
    )


def released(prev: LeaseRecord, wall: dt.datetime) -> LeaseRecord:
    """The record a leader that stops writes, so a standby takes over at its next read
    instead of after a lease duration (client-go's ReleaseOnCancel: no holder, 1 s)."""
    return replace(prev, holder=None, duration_s=1.0, renew_time=wall)


def held(renewed_at: float | None, now: float, renew_deadline_s: float) -> bool:
    """Whether a leader that last renewed at `renewed_at` may still act at `now`."""
    return renewed_at is not None and now - renewed_at < renew_deadline_s


def deadline(renewed_at: float | None, renew_deadline_s: float) -> float:
    """When a leader that last renewed at `renewed_at` must have stepped down: it wakes
    then at the latest, and no renewal attempt may run past it."""
    return -math.inf if renewed_at is None else renewed_at + renew_deadline_s


def check_timing(duration_s: float, renew_deadline_s: float, retry_s: float) -> str | None:
    """Why these timings cannot elect safely (client-go's rules), or None."""
    if not 0 < retry_s < renew_deadline_s:
        return f"the retry period ({retry_s:g} s) must be positive and shorter than the renew deadline ({renew_deadline_s:g} s)"
    if not renew_deadline_s < duration_s:
        return f"the renew deadline ({renew_deadline_s:g} s) must be shorter than the lease duration ({duration_s:g} s)"
    return None
