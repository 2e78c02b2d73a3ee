"""Freeing GPUs within a move budget: the re-planner's consolidation (issue 15).

After a re-plan has served the new rates, its emptiest GPUs may be dissolved into
the others' slack, as planning does (control.consolidate), but each dissolution
costs moves: the (GPU, session) pairs it loads and unloads relative to the previous
plan. A dissolution is taken whole (its loads with the unloads they make possible,
never an unload alone) and only while the moves spent stay within the budget; the
ones found beyond it are undone and reported as held back, so the next epoch can
take them. Nodes are found through a SlackIndex, not by scanning every node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from control.consolidate import (
    MAX_DISSOLVE_FAILURES,
    SMALL_PLAN,
    SMALL_PLAN_FAILURES,
    dissolve_priced,
)
from control.nodes import Node
from control.slack_index import SlackIndex


@dataclass(slots=True)
class HeldBack:
    """GPUs the consolidation found it could free but the budget did not allow, and the
    moves those would take (at least: the search stops after a few failures)."""

    gpus: int = 0
    moves: int = 0
    # GPUs over what a fresh plan would use, estimated: the new rates' lower bound times
    # the previous plan's GPUs per bound (filled in by the scheduler; None: unknown).
    behind: int | None = None

    def summary(self) -> str:
        found = f"{self.gpus} GPUs for {self.moves} moves" if self.gpus else "-"
        return found if self.behind is None else f"{found}; ~{self.behind} over fresh"


@dataclass(slots=True)
class Consolidated:
    nodes: list[Node]
    spent: int  # moves spent from the budget
    held_back: HeldBack


def node_moves(n: Node, origin: Mapping[str, frozenset[str]]) -> int:
    """(GPU, session) pairs loaded or unloaded on `n` relative to the previous plan."""
    was = origin.get(n.gpu, frozenset()) if n.gpu is not None else frozenset()
    now = n.pieces.keys()
    return len(now - was) + len(was - now)


# GPUs a dissolved GPU's sessions are tried on, the roomiest (big plans).
SCAN = 48


def consolidate(
    nodes: list[Node],
    origin: Mapping[str, frozenset[str]],
    budget: int,
    index: SlackIndex | None = None,
) -> Consolidated:
    """Dissolve the least full nodes while each frees a GPU within the move budget."""

    def price(victim: Node, touched: list[tuple[Node, Node]]) -> int:
        was = origin.get(victim.gpu, frozenset()) if victim.gpu is not None else frozenset()
        cost = len(was) - node_moves(victim, origin)
        return cost + sum(node_moves(n, origin) - node_moves(b, origin) for n, b in touched)

    # Big plans: half the failures planning allows; each failed try places all of a GPU's
    # sessions but the last, and a re-plan runs every epoch (BENCHMARKS.md, "Fleet scale").
    limit = SMALL_PLAN_FAILURES if len(nodes) <= SMALL_PLAN else MAX_DISSOLVE_FAILURES // 2
    # Big plans: into room there is on the SCAN roomiest GPUs. Shortening a cycle to take
    # a piece re-batches a GPU, and trying every GPU with room took most of the re-plan's
    # time on a thousand GPUs (BENCHMARKS.md, "Fleet scale").
    small = len(nodes) <= SMALL_PLAN
    scan = None if small else SCAN
    kept, spent, held = dissolve_priced(nodes, limit, price, budget, small, index, scan)
    return Consolidated(kept, spent, HeldBack(len(held), sum(held)))
