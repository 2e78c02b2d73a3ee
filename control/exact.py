"""An exact reference for small cases: squishy bin packing as a MILP, solved by HiGHS.

The heuristic policies are judged against DESIGN.md's lower bound, which ignores
integrality and shared duty cycles. For a few dozen sessions the problem itself can
be solved: each GPU slot picks one duty cycle out of a discrete set, each session a
batch per slot, and rates split freely across slots (Nexus §6.1's squishy bin packing,
written as a mixed-integer program with the duty cycle discretised).

Two programs share one builder:
- `restricted`: cycles exactly at the given points. Every solution is a valid plan,
  so its optimum is a number of GPUs some plan reaches (the reference the heuristic
  is compared with); with the heuristic's own cycles among the points it is never
  worse than the heuristic.
- `relaxed`: cycles anywhere in [e_k, e_k+1) of a grid spanning every feasible cycle,
  judged optimistically (arrivals and SLO at e_k, time up to e_k+1; latency and
  memory of the cheapest batch at least as large). Every valid plan is feasible
  here, so its optimum (or HiGHS's dual bound) is a lower bound on any plan's GPUs.

Pure: demands in, counts and a plan out; HiGHS is imported where it runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from control.problem import Demand, GpuClass
from control.types import Allocation, GpuPlan, Plan

# Cycle buckets of the relaxed program (geometric between the shortest latency and the
# longest SLO): more buckets tighten the bound and grow the program linearly.
RELAX_BUCKETS = 16


@dataclass(frozen=True, slots=True)
class Bucket:
    """One choice of duty cycle: arrivals per batch and the SLO judged at `arrive`,
    the batches' time bounded by `capacity` (equal for the restricted program)."""

    arrive: float
    capacity: float


@dataclass(slots=True)
class ExactResult:
    gpus: int | None  # the best solution's GPUs (None: none found in the time)
    bound: int  # no plan (restricted: on these cycles) uses fewer
    optimal: bool
    seconds: float
    plan: Plan | None = None  # the restricted program's plan
    columns: int = 0
    notes: list[str] = field(default_factory=list)


def grid(demands: Sequence[Demand], buckets: int = RELAX_BUCKETS) -> list[float]:
    """Edges e_0 < … < e_K, geometric, from the shortest batch to the longest SLO."""
    lo = min(d.table.lat[1] for d in demands)
    hi = max(d.slo for d in demands)
    return [lo * (hi / lo) ** (k / buckets) for k in range(buckets + 1)]


def relaxed(
    demands: Sequence[Demand], slots: int, buckets: int = RELAX_BUCKETS, time_limit: float = 60.0
) -> ExactResult:
    edges = grid(demands, buckets)
    bs = [Bucket(edges[k], edges[k + 1]) for k in range(buckets)]
    return _solve(demands, slots, bs, relax=True, time_limit=time_limit)


def restricted(
    demands: Sequence[Demand], slots: int, duties: Sequence[float], time_limit: float = 60.0
) -> ExactResult:
    bs = [Bucket(d, d) for d in sorted(set(duties))]
    return _solve(demands, slots, bs, relax=False, time_limit=time_limit)


def _tables(d: Demand, relax: bool) -> tuple[Sequence[float], Sequence[float]]:
    """l(b) and memory(b); relaxed: of the cheapest batch at least b (non-monotone
    profiles may serve b arrivals faster with a larger batch)."""
    lat, mem = list(d.table.lat), list(d.table.mem)
    if relax:
        for b in range(len(lat) - 2, 0, -1):
            lat[b] = min(lat[b], lat[b + 1])
            mem[b] = min(mem[b], mem[b + 1])
    return lat, mem


class _Program:
    """Columns and rows, built up then handed to HiGHS as one sparse model."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[bool] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []

    def col(self, cost: float, upper: float, integer: bool) -> int:
        self.cost.append(cost)
        self.lower.append(0.0)
        self.upper.append(upper)
        self.integer.append(integer)
        return len(self.cost) - 1

    def row(self, idx: list[int], val: list[float], lo: float, hi: float) -> None:
        self.rows.append((idx, val, lo, hi))

    def solve(self, time_limit: float):
        import highspy
        import numpy as np

        lp = highspy.HighsLp()
        n = len(self.cost)
        lp.num_col_, lp.num_row_ = n, len(self.rows)
        lp.col_cost_ = np.array(self.cost)
        lp.col_lower_ = np.array(self.lower)
        lp.col_upper_ = np.array(self.upper)
        lp.row_lower_ = np.array([r[2] for r in self.rows])
        lp.row_upper_ = np.array([r[3] for r in self.rows])
        starts, index, value = [0], [], []
        for idx, val, _, _ in self.rows:
            index += idx
            value += val
            starts.append(len(index))
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(value)
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
            for i in self.integer
        ]
        h = _highs(highspy)
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("threads", 1)
        h.passModel(lp)
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        has = info.primal_solution_status == 2  # kSolutionStatusFeasible
        x = list(h.getSolution().col_value) if has else None
        return status == highspy.HighsModelStatus.kOptimal, x, info.mip_dual_bound


def _highs(highspy):  # noqa: ANN001, ANN202
    """A HiGHS instance, its start-up banner (printed by the C++ library to the process's
    stdout, whatever output_flag says) kept off stdout."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _solve(
    demands: Sequence[Demand], slots: int, buckets: list[Bucket], relax: bool, time_limit: float
) -> ExactResult:
    t0 = time.perf_counter()
    classes: list[GpuClass] = []
    for d in demands:
        if d.gclass not in classes:
            classes.append(d.gclass)
    if len(classes) != 1:
        raise ValueError("the exact program takes demands on one GPU class")
    cap_mem = classes[0].memory
    prog = _Program()
    K = len(buckets)
    # use[g][k]: slot g runs bucket k (at most one); the objective counts them.
    use = [[prog.col(1.0, 1.0, True) for _ in range(K)] for _ in range(slots)]
    for g in range(slots):
        prog.row(use[g], [1.0] * K, 0.0, 1.0)
        if g + 1 < slots:
            # Symmetry: slots used in order, their bucket index non-increasing.
            idx = use[g] + use[g + 1]
            val = [float(k + 1) for k in range(K)] + [-float(k + 1) for k in range(K)]
            prog.row(idx, val, 0.0, math.inf)
    time_rows = [[([], []) for _ in range(K)] for _ in range(slots)]
    mem_rows = [([], []) for _ in range(slots)]
    placed: list[tuple[int, int, int, int, int]] = []  # (col x, col r, demand, slot, bucket)
    batch_of: dict[int, int] = {}
    for i, d in enumerate(demands):
        lat, mem = _tables(d, relax)
        rate_cols: list[int] = []
        for k, bk in enumerate(buckets):
            top = min(d.table.max_batch, max(1, math.ceil(d.rate * bk.arrive / 1000.0 - 1e-9)))
            ok = [
                b
                for b in range(1, top + 1)
                if bk.arrive + lat[b] <= d.slo * (1 + 1e-9)
                and lat[b] <= bk.capacity * (1 + 1e-9)
                and mem[b] <= cap_mem
            ]
            if not ok:
                continue
            for g in range(slots):
                r = prog.col(0.0, d.rate, False)
                rate_cols.append(r)
                xs = [prog.col(0.0, 1.0, True) for _ in ok]
                # One batch per (session, slot), only on the slot's bucket.
                prog.row([*xs, use[g][k]], [1.0] * len(xs) + [-1.0], -math.inf, 0.0)
                # Served rate within what the batch carries per cycle.
                prog.row([r, *xs], [1.0] + [-1000.0 * b / bk.arrive for b in ok], -math.inf, 0.0)
                ti, tv = time_rows[g][k]
                mi, mv = mem_rows[g]
                for x, b in zip(xs, ok, strict=True):
                    ti.append(x)
                    tv.append(lat[b])
                    mi.append(x)
                    mv.append(mem[b])
                    batch_of[x] = b
                    placed.append((x, r, i, g, k))
        if not rate_cols:
            return ExactResult(
                None, 0, False, time.perf_counter() - t0, notes=[f"{d.id}: no cycle"]
            )
        prog.row(rate_cols, [1.0] * len(rate_cols), d.rate, d.rate)
    for g in range(slots):
        for k, bk in enumerate(buckets):
            ti, tv = time_rows[g][k]
            if ti:
                prog.row([*ti, use[g][k]], [*tv, -bk.capacity], -math.inf, 0.0)
        mi, mv = mem_rows[g]
        if mi and math.isfinite(cap_mem):
            prog.row(mi, mv, 0.0, cap_mem)
    optimal, x, dual = prog.solve(time_limit)
    seconds = time.perf_counter() - t0
    bound = max(0, math.ceil(dual - 1e-6)) if math.isfinite(dual) else 0
    if x is None:
        return ExactResult(None, bound, False, seconds, columns=len(prog.cost))
    gpus = round(sum(x[c] for g in range(slots) for c in use[g]))
    if optimal:
        bound = gpus
    plan = None if relax else _plan(demands, buckets, classes[0], x, use, placed, batch_of)
    return ExactResult(gpus, bound, optimal, seconds, plan, len(prog.cost))


def _plan(demands, buckets, gclass, x, use, placed, batch_of) -> Plan:
    gpus: list[GpuPlan] = []
    by_slot: dict[int, list[Allocation]] = {}
    for xc, rc, i, g, _k in placed:
        if x[xc] > 0.5 and x[rc] > 1e-9:
            d = demands[i]
            by_slot.setdefault(g, []).append(
                Allocation(
                    session=d.id, model=d.model, batch=batch_of[xc], rate=x[rc], slo_ms=d.slo
                )
            )
    for g, allocs in sorted(by_slot.items()):
        k = max(range(len(buckets)), key=lambda k: x[use[g][k]])
        gpus.append(
            GpuPlan(
                gpu=f"{gclass.gpu_type}-{g}",
                gpu_type=gclass.gpu_type,
                duty_cycle_ms=buckets[k].arrive,
                allocations=allocs,
            )
        )
    return Plan(gpus=gpus)
