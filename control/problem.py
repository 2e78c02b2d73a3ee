"""What the packers plan: demands (a session's rate on one GPU class) and GPU classes.

A GPU class is a GPU type with a memory size, either an unbounded pool
(`--gpu-type T --gpu-memory B`) or a fixed list of fleet GPUs. Resolving sessions
against profiles and classes is where missing profiles and impossible SLOs turn
into `unplaced` entries instead of errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from control.tables import BatchTable
from control.types import Session, Unplaced
from model_repo_tools.fleet import Fleet
from model_repo_tools.profiles import LatencyCurve

if TYPE_CHECKING:
    from control.prefix_plan import Share


@dataclass(slots=True, frozen=True)
class GpuClass:
    gpu_type: str
    memory: float = math.inf
    # Fleet GPU ids of this class; None for an unbounded pool.
    ids: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.gpu_type if math.isinf(self.memory) else f"{self.gpu_type}:{self.memory:.0f}"

    @property
    def count(self) -> float:
        return math.inf if self.ids is None else len(self.ids)


@dataclass(slots=True)
class Demand:
    """A session's rate to place on one GPU class, with that class's table."""

    id: str
    model: str
    slo: float
    rate: float
    table: BatchTable
    gclass: GpuClass
    # The same session on the other GPU classes that can serve it, cheapest first: the
    # packers fall back to them to empty a GPU.
    alts: tuple[Demand, ...] = ()
    # Where the model runs as a shared prefix then its suffix (control.prefix_plan).
    share: Share | None = None


@dataclass(slots=True)
class Problem:
    demands: list[Demand] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)
    classes: list[GpuClass] = field(default_factory=list)
    sessions: dict[str, Session] = field(default_factory=dict)


def pool(gpu_type: str, memory: float | None = None) -> list[GpuClass]:
    return [GpuClass(gpu_type, math.inf if memory is None else float(memory))]


def fleet_classes(fleet: Fleet) -> list[GpuClass]:
    groups: dict[tuple[str, int], list[str]] = {}
    for g in fleet.gpus:
        groups.setdefault((g.gpu_type, g.memory_bytes), []).append(g.id)
    return [GpuClass(t, float(m), tuple(ids)) for (t, m), ids in sorted(groups.items())]


class TableCache:
    """BatchTables built lazily from LatencyCurves, keyed (model, gpu type)."""

    def __init__(self, curves: Mapping[tuple[str, str], LatencyCurve]) -> None:
        self._curves = curves
        self._tables: dict[tuple[str, str], BatchTable] = {}
        self.split: dict[str, tuple[str, str]] | None = None  # control.prefix_plan.split_models

    def get(self, model: str, gpu_type: str) -> BatchTable | None:
        key = (model, gpu_type)
        t = self._tables.get(key)
        if t is None and key in self._curves:
            t = self._tables[key] = BatchTable.from_curve(self._curves[key])
        return t


def resolve(
    sessions: Iterable[Session],
    curves: Mapping[tuple[str, str], LatencyCurve] | TableCache,
    classes: list[GpuClass],
) -> Problem:
    """Give each session the GPU class where it needs the least GPU (its lower bound).

    Sessions without any usable class become `unplaced` with the reason.
    """
    from control.prefix_plan import share_of, split_models

    tables = curves if isinstance(curves, TableCache) else TableCache(curves)
    if tables.split is None:
        tables.split = split_models(tables._curves)
    prob = Problem(classes=list(classes))
    types = sorted({c.gpu_type for c in classes})
    sessions = list(sessions)
    for c in classes:  # every table's quantities for all its sessions at once
        by_model: dict[str, list[Session]] = {}
        for s in sessions:
            by_model.setdefault(s.model, []).append(s)
        for model, group in by_model.items():
            t = tables.get(model, c.gpu_type)
            if t is not None:
                slos = [s.slo_ms for s in group]
                t.prefetch("sat", slos, slos, c.memory)
                t.prefetch("need", [s.rate for s in group], slos)
    for s in sessions:
        prob.sessions[s.id] = s
        if s.rate <= 0:
            continue
        options: list[tuple[float, float, Demand]] = []
        reasons: list[str] = []
        for c in classes:
            t = tables.get(s.model, c.gpu_type)
            if t is None:
                continue
            if t.mem[1] > c.memory:
                reasons.append(
                    f"{s.model} needs {t.mem[1]:.0f} bytes at batch 1, {c.name} has {c.memory:.0f}"
                )
                continue
            if t.saturated_batch(s.slo_ms, c.memory) is None:
                reasons.append(
                    f"SLO {s.slo_ms:g} ms below 2·l(1) = {2 * t.lat[1]:.4g} ms on {c.gpu_type}"
                )
                continue
            need = t.need(s.rate, s.slo_ms)
            # Ties go to the larger class, so small fleets of a type are kept for overflow.
            options.append((need, -c.count, Demand(s.id, s.model, s.slo_ms, s.rate, t, c)))
        if options:
            options.sort(key=lambda o: o[:2])
            best = options[0][2]
            best.alts = tuple(o[2] for o in options[1:])
            if s.model in tables.split:
                best.share = share_of(s.model, best.gclass.gpu_type, tables.get, tables.split)
            prob.demands.append(best)
            continue
        if not reasons:
            reasons.append(f"no profile for model {s.model} on gpu type {', '.join(types)}")
        prob.unplaced.append(Unplaced(session=s.id, rate=s.rate, reason=reasons[0], model=s.model))
    return prob
