"""Nodes indexed by their slack (d − Σ l), per GPU class, and by the sessions they hold.

Placing a session's rate into other nodes' slack (control.consolidate.place_rate)
need only look at nodes with room for the cheapest batch of its model, or that
already hold the session (there growth may cost less than a batch). On a tightly
packed plan of a thousand GPUs that is a few dozen nodes, not all of them: the
incremental re-planner and the budgeted consolidation query this index instead
of scanning every node per session.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from control.nodes import Node
from control.problem import GpuClass


class SlackIndex:
    """With `hosts` (the default) it also knows which nodes hold each session, and each
    node's Σ of its pieces' cheapest batches (`floor_sum`); the packers, which only ask
    for room, do without (their nodes change at every load)."""

    def __init__(self, nodes: Iterable[Node] = (), hosts: bool = True) -> None:
        self._keys: dict[int, list[tuple[float, int]]] = {}  # by id(gclass)
        self._by_seq: dict[int, Node] = {}
        self._seq: dict[int, int] = {}  # id(node) → its sequence number (insertion order)
        self._key: dict[int, tuple[float, int]] = {}
        self._track = hosts
        self._held: dict[int, tuple[str, ...]] = {}
        self._floor: dict[int, float] = {}
        self._hosts: dict[str, dict[int, Node]] = {}
        self._next = 0
        for n in nodes:
            self.add(n)

    def __len__(self) -> int:
        return len(self._key)

    def add(self, n: Node) -> None:
        seq = self._next
        self._next += 1
        self._seq[id(n)] = seq
        self._by_seq[seq] = n
        self._insert(n, seq)

    def _insert(self, n: Node, seq: int) -> None:
        key = (n.slack, seq)
        bisect.insort(self._keys.setdefault(id(n.gclass), []), key)
        self._key[id(n)] = key
        if not self._track:
            return
        held = tuple(n.pieces)
        self._held[id(n)] = held
        self._floor[id(n)] = sum(p.demand.table.floor for p in n.pieces.values())
        for sid in held:
            self._hosts.setdefault(sid, {})[seq] = n

    def _drop(self, n: Node) -> int:
        seq = self._seq[id(n)]
        keys = self._keys[id(n.gclass)]
        del keys[bisect.bisect_left(keys, self._key.pop(id(n)))]
        if self._track:
            self._floor.pop(id(n))
            for sid in self._held.pop(id(n)):
                self._hosts[sid].pop(seq, None)
        return seq

    def discard(self, n: Node) -> None:
        if id(n) in self._key:
            seq = self._drop(n)
            del self._seq[id(n)], self._by_seq[seq]

    def update(self, n: Node) -> None:
        """Re-index `n` after its load or its sessions changed."""
        key = self._key.get(id(n))
        if key is None:
            return
        if (
            self._track
            and len(n.pieces) == len(self._held[id(n)])
            and all(sid in n.pieces for sid in self._held[id(n)])
        ):
            # The same sessions (the common case: more rate for one): only its slack moved.
            keys = self._keys[id(n.gclass)]
            del keys[bisect.bisect_left(keys, key)]
            key = (n.slack, key[1])
            bisect.insort(keys, key)
            self._key[id(n)] = key
            return
        self._insert(n, self._drop(n))

    def roomy(self, gclass: GpuClass, slack: float) -> list[Node]:
        """Nodes of `gclass` with at least `slack` ms free per cycle, in index order."""
        keys = self._keys.get(id(gclass), [])
        start = bisect.bisect_left(keys, (slack, -1))
        return [self._by_seq[seq] for _, seq in keys[start:]]

    def room(
        self, gclass: GpuClass, slack: float
    ) -> tuple[list[tuple[float, int]], int, dict[int, Node]]:
        """The nodes `roomy` returns, for a flat loop: the (slack, sequence number) keys of
        `gclass`, where those with at least `slack` start, and the nodes by sequence
        number (which counts `add` calls: it orders nodes by when they were indexed).
        Valid until the index next changes."""
        keys = self._keys.get(id(gclass), [])
        return keys, bisect.bisect_left(keys, (slack, -1)), self._by_seq

    def nodes(self, gclass: GpuClass) -> list[Node]:
        return [self._by_seq[seq] for _, seq in self._keys.get(id(gclass), [])]

    def floor_sum(self, n: Node) -> float:
        """Σ over `n`'s pieces of their table's cheapest batch (needs `hosts`)."""
        return self._floor[id(n)]

    def roomiest(self, gclass: GpuClass, k: int) -> list[Node]:
        """The `k` nodes of `gclass` with the most slack, the roomiest last."""
        return [self._by_seq[seq] for _, seq in self._keys.get(id(gclass), [])[-k:]]

    def hosts(self, sid: str) -> list[Node]:
        return list(self._hosts.get(sid, {}).values())

    def candidates(self, gclass: GpuClass, sid: str, floor: float) -> list[Node]:
        """Every node of `gclass` that could take more of session `sid`, whose cheapest
        batch costs `floor`: its hosts, then the nodes with room for that batch. A
        little allowance keeps nodes that the packers' float allowance (FIT) admits."""
        out = [n for n in self.hosts(sid) if n.gclass is gclass]
        have = {id(n) for n in out}
        out += [n for n in self.roomy(gclass, floor * (1 - 1e-6) - 1e-6) if id(n) not in have]
        return out
