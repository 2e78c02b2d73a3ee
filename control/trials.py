"""The packings the `tnx` policy tries on one problem's residual loads.

Each `Trial` names a packer (control.packers) and its settings; control.tnx_policy
runs them all, dissolves each result (control.consolidate) and keeps the plan with
the fewest GPUs. Which trials run depends on the problem: memory-saving ones where
memory, not time, bounds the packing, and fewer of them on big problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from control.nodes import Node
from control.packers import Residual, memory_pressure, pack, pack_memory, reweighted, split_capped

# Occupancy inflation tolerated when a load joins a node with a shorter cycle than its
# own: 0 keeps SLO classes apart, inf packs wherever it fits. Each bound is one more
# packing per problem (plan time) for the cases it wins; judged on the held-out table
# and the "Scheduler" rows (BENCHMARKS.md).
INFLATION_BOUNDS = (0.15, 0.6, math.inf)
# Weights of memory share against time share when choosing a load's batch alone: the
# higher, the smaller the batches (shorter cycles) where memory binds. Judged on the
# held-out table's 2.5 GB to 16 GB rows (BENCHMARKS.md).
MEMORY_WEIGHTS = (0.5, 1.0)
# Above this many residual loads the slow memory trials (squeeze re-batches every full
# node per load) and the tightest bound are skipped where memory binds: they seldom win
# there and cost seconds; keeps 2000 sessions at 4 GB within the plan-time budget of the
# "Scheduler" tables (BENCHMARKS.md, 5 s).
SQUEEZE_MAX_LOADS = 800
# Split loads (packers.split_capped) are tried where their longest cycle would reach
# this share of their SLO (less a batch); one share, one trial per bound.
SPLIT_REACH = (0.5,)
# Above this ratio of memory to time (both in GPUs alone), the memory-saving trials run
# too; below it they seldom win and would double the plan time.
MEMORY_PRESSURE = 0.9


@dataclass(frozen=True, slots=True)
class Trial:
    """One packing to try. Equal trials have equal settings, whatever their loads: a
    trial that won on one problem can be asked for on a related one."""

    loads: list[Residual] = field(compare=False, repr=False)
    # control.packers.pack_memory (biggest first by memory) instead of pack (by cycle).
    memory_first: bool = False
    bound: float = math.inf  # pack: occupancy inflation tolerated (INFLATION_BOUNDS)
    weight: float = 0.0  # the memory weight the loads' batches and the stretch are chosen by
    balance: bool = False  # pack: shorten a node's cycle while its memory fills faster
    squeeze: bool = False  # pack: shorten a full node's cycle only to fit a load in
    both: bool = False  # pack: best fit judged by time and memory share together
    by_time: bool = False  # pack_memory: biggest first by the larger of time and memory
    split: bool = False  # the loads were split by packers.split_capped

    def pack(self) -> list[Node]:
        if self.memory_first:
            return pack_memory(self.loads, by_time=self.by_time)
        return pack(
            self.loads, self.bound, squeeze=self.squeeze, balance=self.balance, both=self.both
        )


def trials(rest: list[Residual]) -> list[Trial]:
    """The trials for these residual loads, in order (ties go to the earlier).

    "balance" shortens a node's cycle after each addition while its memory fills faster
    than its time; "squeeze" does so only to fit a load in (better, slower).
    """
    balance = any(math.isfinite(r.demand.gclass.memory) for r in rest)
    pressure = memory_pressure(rest) > MEMORY_PRESSURE
    small = len(rest) <= SQUEEZE_MAX_LOADS
    # The tightest bound seldom wins where memory binds on big problems.
    bounds = INFLATION_BOUNDS if small or not pressure else INFLATION_BOUNDS[1:]
    out = [Trial(rest, bound=b, balance=balance) for b in bounds]
    if small or pressure:
        # Biggest first by the larger of time and memory share, best fit by both. Without
        # memory pressure it lost by 10-57 GPUs on every held-out case of 600 and 2,000
        # sessions, and it is the slowest packer (BENCHMARKS.md, "Fleet scale").
        out.append(Trial(rest, memory_first=True, by_time=True))
    for reach in SPLIT_REACH:
        split = split_capped(rest, reach)
        if len(split) > len(rest):
            out += [
                Trial(split, bound=b, balance=balance, split=True) for b in INFLATION_BOUNDS[1:]
            ]
    if pressure:
        # Memory, not time, may bound the packing: also pack biggest-first by memory, and
        # try configurations with smaller batches (shorter cycles) that hold less memory.
        if small:
            out.append(Trial(rest, memory_first=True))
        for w in MEMORY_WEIGHTS:
            if not small and w != MEMORY_WEIGHTS[-1]:
                continue
            rest_w = reweighted(rest, w)
            out.append(Trial(rest_w, memory_first=True, weight=w))
            if not small:
                continue  # the rest seldom win on big problems, and would cost seconds
            for b in INFLATION_BOUNDS[1:]:
                out.append(Trial(rest_w, bound=b, weight=w, balance=balance))
                out.append(Trial(rest_w, bound=b, weight=w, balance=balance, both=True))
                out.append(Trial(rest_w, bound=b, weight=w, squeeze=True))
                out.append(Trial(rest_w, bound=b, weight=w, squeeze=True, both=True))
    return out
