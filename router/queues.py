"""A session's earliest-deadline-first queue (Nexus §6.3, Clockwork's EDF).

Within one session the SLO is fixed, so deadlines arrive in order and a push
is an append; only re-homed requests (a failed batch, a plan switch) land in
the middle, where a bisect finds their place. The head is an offset into a
list rather than `list.pop(0)`, so taking a batch from the front is O(batch).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from router.types import Request


class EdfQueue:
    """Requests ordered by (deadline, insertion order)."""

    __slots__ = ("_items", "_deadlines", "_head", "_samples")

    def __init__(self) -> None:
        self._items: list[Request] = []
        # Parallel sort keys. Ties stay first-in first-out without a sequence number: a
        # request pushed now is later than every one queued, so it goes after those with
        # its deadline (an append, or bisect_right).
        self._deadlines: list[float] = []
        self._head = 0
        self._samples = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def __iter__(self) -> Iterator[Request]:
        return iter(self._items[self._head :])

    @property
    def samples(self) -> int:
        """Samples queued (requests may carry several)."""
        return self._samples

    def push(self, r: Request) -> None:
        deadline = r.deadline
        self._samples += r.n_samples
        if self._head == len(self._items) or deadline >= self._deadlines[-1]:
            self._items.append(r)
            self._deadlines.append(deadline)
            return
        i = bisect.bisect_right(self._deadlines, deadline, lo=self._head)
        self._items.insert(i, r)
        self._deadlines.insert(i, deadline)

    def is_head(self, r: Request) -> bool:
        return self._head < len(self._items) and self._items[self._head] is r

    def head(self) -> Request:
        if not self:
            raise IndexError("head of an empty queue")
        return self._items[self._head]

    def pop(self) -> Request:
        r = self.head()
        self._items[self._head] = None  # type: ignore[call-overload]  # let it be collected
        self._head += 1
        self._samples -= r.n_samples
        self._compact()
        return r

    def window(self, max_samples: int) -> tuple[int, int]:
        """(requests, samples) of the longest head run holding at most `max_samples`.

        Always at least the head request, even when it alone is larger, so an
        oversized request is seen (and refused) rather than starving the queue.
        """
        n = 0
        samples = 0
        items = self._items
        for i in range(self._head, len(items)):
            s = items[i].n_samples
            if n and samples + s > max_samples:
                break
            n += 1
            samples += s
            if samples >= max_samples:
                break
        return n, samples

    def take(self, n: int, samples: int | None = None) -> tuple[Request, ...]:
        """Remove and return the first `n` requests (`samples`: theirs, if known)."""
        end = self._head + n
        out = tuple(self._items[self._head : end])
        self._items[self._head : end] = [None] * n  # type: ignore[list-item]
        self._head = end
        self._samples -= sum(r.n_samples for r in out) if samples is None else samples
        self._compact()
        return out

    def drain(self) -> list[Request]:
        """Remove and return everything, earliest deadline first."""
        out = self._items[self._head :]
        self._items, self._deadlines, self._head, self._samples = [], [], 0, 0
        return out

    def _compact(self) -> None:
        if self._head == len(self._items):
            self._items.clear()
            self._deadlines.clear()
            self._head = 0
        elif self._head > 64 and self._head * 2 > len(self._items):
            del self._items[: self._head]
            del self._deadlines[: self._head]
            self._head = 0
