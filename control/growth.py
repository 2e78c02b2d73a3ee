"""Absorbing grown rates where the sessions already run (incremental re-planning, issue 15).

After a rate change every kept allocation holds its old rate, or its share of the new
one where the rate shrank; what a session gained is placed here first, on the GPUs
that already run it, where it costs no load. Per GPU the grown sessions go whole,
cheapest growth first, so the most of them fit; where a grown session's SLO no longer
allows the GPU's cycle with its larger batch, the cycle is shortened. Where two or
more do not fit, evicting
one session whole (the least busy that could free enough time) may make room for all the others'
growth: that costs an unload and a load, where splitting costs a load per session
that did not fit, and a batch per cycle on another GPU for each split piece. What
still does not fit is absorbed in part, and the rest is left to place elsewhere.
"""

from __future__ import annotations

import math

from control.nodes import Node
from control.packers import prefetch
from control.slack_index import SlackIndex
from control.tables import EPS

# Sessions tried for eviction per GPU, the least busy that could free enough time first
# (a small session is the easiest to place elsewhere); each try re-adds the GPU's growth.
# Judged on BENCHMARKS.md "Fleet scale" (moves and GPUs after ±10% and ±30% changes).
EVICT_TRIES = 3


def absorb(nodes: list[Node], left: dict[str, float], index: SlackIndex) -> None:
    """Place what each session in `left` still needs on the nodes that hold it; `left`
    keeps what did not fit (with an evicted session's whole rate)."""
    single: dict[int, tuple[Node, list[str]]] = {}
    for sid, rate in left.items():
        hosts = index.hosts(sid) if rate > EPS else []
        if len(hosts) == 1:
            single.setdefault(id(hosts[0]), (hosts[0], []))[1].append(sid)
    hard = []
    for node, sids in single.values():
        if _all_fit(node, sids, left):
            index.update(node)
        else:
            hard.append((node, sids))
    # The longest cycles the grown sessions allow, for all at once (_grow's fallback).
    prefetch(
        "duty", ((n.pieces[s].demand, n.pieces[s].rate + left[s]) for n, ss in hard for s in ss)
    )
    for node, sids in hard:
        _absorb_on(node, sids, left)
        index.update(node)
    for sid, rate in left.items():
        for n in index.hosts(sid) if rate > EPS else ():
            if rate <= EPS:
                break
            here = n.pieces[sid].demand
            extra = min(rate, n.max_rate(here))
            if extra > EPS and n.add(here, extra):
                rate -= extra
                index.update(n)
        left[sid] = rate


def _whole(node: Node, sids: list[str], left: dict[str, float]) -> list[str]:
    """Add each session's growth whole, cheapest first; the sessions that did not fit."""

    def extra(sid: str) -> float:
        c = node.cost(node.pieces[sid].demand, left[sid])
        return math.inf if c is None else c[1]

    return [s for s in sorted(sids, key=extra) if not _grow(node, s, left[s])]


def _grow(node: Node, sid: str, rate: float) -> bool:
    """Add `rate` to `sid`'s piece; where its SLO no longer allows the node's cycle with
    the larger batch, shorten the cycle as far as that needs (every batch re-chosen)."""
    p = node.pieces[sid]
    if node.add(p.demand, rate):
        return True
    d = p.demand
    longest = d.table.max_duty(p.rate + rate, d.slo, d.gclass.memory)
    return 0 < longest < node.duty and node.add_shrunk(d, rate, longest)


def _all_fit(node: Node, sids: list[str], left: dict[str, float]) -> bool:
    """Add every session's growth where it all fits the room there is (no undo needed)."""
    room, mem_room = node.slack, node.gclass.memory - node.mem
    costs = []
    for s in sids:
        c = node.cost(node.pieces[s].demand, left[s])
        if c is None:
            return False
        costs.append(c)
        room, mem_room = room - c[1], mem_room - c[2]
    if room < 0 or mem_room < 0:
        return False
    # Each cost holds after the others' additions: it depends on its own piece alone.
    for s, c in zip(sids, costs, strict=True):
        node.apply(node.pieces[s].demand, left[s], c)
        left[s] = 0.0
    return True


def _absorb_on(node: Node, sids: list[str], left: dict[str, float]) -> None:
    """Growth that does not all fit (`_all_fit`): whole where it can, else by eviction."""
    before = node.copy()
    failed = _whole(node, sids, left)
    if len(failed) >= 2:
        # The time the failed growth needs beyond the room left: a smaller victim frees
        # too little (where a grown SLO, not time, failed it, any victim may do).
        need = -node.slack
        for s in failed:
            c = node.cost(node.pieces[s].demand, left[s])
            need = need + c[1] if c is not None else -math.inf
        split = node.copy()
        victims = [p for p in before.pieces.values() if p.lat >= need]
        for victim in sorted(victims, key=lambda p: p.lat)[:EVICT_TRIES]:
            node.restore(before.copy())
            vid = victim.demand.id
            node.remove(vid)
            if not _whole(node, [s for s in sids if s != vid], left):
                evicted = left.get(vid, 0.0) + victim.rate  # its growth, and what it had
                for s in sids:
                    left[s] = 0.0
                left[vid] = evicted
                return
        node.restore(split)
    for s in sids:
        if s not in failed:
            left[s] = 0.0
