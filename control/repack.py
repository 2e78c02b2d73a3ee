"""Moving a re-plan towards a fresh plan, a window of GPUs at a time, within a move budget.

After rates change, an incremental re-plan keeps its GPUs and so drifts from what
planning afresh would give. Switching to a fresh plan would move nearly every
(GPU, session) pair. Instead, where the re-plan is estimated to use more GPUs than a
fresh plan (control.scheduler: the new rates' lower bound times the previous plan's
GPUs per bound), the least full GPUs are planned afresh together, a window at a time
(a large-neighbourhood step): their sessions' rates are packed by the policy, and the
result is taken where it uses fewer GPUs and its moves fit the budget left. New GPUs
take the ids of the old ones they share most sessions with, so what stays, stays.
A window that saves GPUs but would pass the budget is held back, for a later epoch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from control.consolidate import dissolve
from control.migrate import node_moves
from control.nodes import Node
from control.problem import Demand

# GPUs planned afresh together per step, and steps per re-plan: a window of 24 found
# nothing to save after a ±30% change at 2,000 sessions (each GPU a little under full),
# one of 64 freed 3 GPUs; each step costs a policy run of its sessions (BENCHMARKS.md,
# "Fleet scale").
WINDOW, STEPS = 64, 2


@dataclass(slots=True)
class Repacked:
    nodes: list[Node]
    spent: int
    held_gpus: int = 0
    held_moves: int = 0


def _fullness(n: Node) -> float:
    cap = n.gclass.memory
    return n.occupancy + (n.mem / cap if math.isfinite(cap) else 0.0)


def repack(
    nodes: list[Node],
    origin: Mapping[str, frozenset[str]],
    budget: int,
    target: int,
    policy: Callable[[list[Demand]], list[Node]],
) -> Repacked:
    """Plan the least full GPUs afresh while `nodes` are more than `target` GPUs and the
    moves stay within `budget`."""
    out = Repacked(list(nodes), 0)
    tried: set[int] = set()
    for _ in range(STEPS):
        if len(out.nodes) <= target:
            break
        window = sorted((n for n in out.nodes if id(n) not in tried), key=_fullness)[:WINDOW]
        if len(window) < 2:
            break
        tried |= {id(n) for n in window}
        new = dissolve(policy(_demands(window)))
        if len(new) >= len(window):
            continue
        _name(new, window)
        cost = sum(node_moves(n, origin) for n in new) - sum(node_moves(n, origin) for n in window)
        named = {n.gpu for n in new}
        cost += sum(len(origin.get(o.gpu, ())) for o in window if o.gpu not in named)
        if out.spent + cost > budget:
            out.held_gpus += len(window) - len(new)
            out.held_moves += cost
            continue
        gone = {id(n) for n in window}
        out.nodes = [n for n in out.nodes if id(n) not in gone] + new
        out.spent += cost
    return out


def _demands(window: list[Node]) -> list[Demand]:
    """The window's pieces as demands, one per (session, GPU class)."""
    rates: dict[tuple[str, int], tuple[Demand, float]] = {}
    for n in window:
        for p in n.pieces.values():
            key = (p.demand.id, id(n.gclass))
            d, r = rates.get(key, (p.demand, 0.0))
            rates[key] = (d, r + p.rate)
    return [dataclasses.replace(d, rate=r) for d, r in rates.values()]


def _name(new: list[Node], old: list[Node]) -> None:
    """Give each new node the id of the old one of its class it shares most sessions with
    (biggest new nodes first); the others get none (a new GPU)."""
    free = [o for o in old if o.gpu is not None]
    for n in sorted(new, key=lambda n: -len(n.pieces)):
        best, shared = None, 0
        for o in free:
            k = len(n.pieces.keys() & o.pieces.keys())
            if o.gclass is n.gclass and k > shared:
                best, shared = o, k
        n.gpu = best.gpu if best is not None else None
        if best is not None:
            free.remove(best)
