"""Running one query request through its stages under its end-to-end SLO (Nexus §6.2 at run
time), as a synchronous state machine.

A query is a tree of stages (`workload.json`); query analysis gave each stage a
budget, a share of the SLO, and the plan runs each stage as a session
`<query>/<stage>` at that budget. One request to the query arrives at `arrival`
and must be answered by `deadline = arrival + SLO`. `QueryRun` decides, from the
tree, `now` and the stages that ended, what happens next:

    RunStage(stage, deadline)   send the stage's requests, each with this deadline
    Fail(reason, detail)        answer the query now, unserved (a 503 `deadline`, or why)
    Finish()                    every stage is done: answer with their outputs

A stage's requests carry the query's deadline less `tail(stage)`, the least time
the stages after it still need on the longest path (each stage's `min_ms`, its
l(1) on its fastest GPU): a stage that ends early leaves its slack to the next
(budgets are what the plan sized the stage sessions for, not per-stage
deadlines), and the batching policy drops a stage request as soon as that
deadline cannot be met. Before a stage starts, `now + min_ms + tail` past the
deadline fails the query at once. After a `Fail` or `Finish`, nothing more comes
out: one answer per query request. No I/O, no clock: the route
(`router.query_route`) drives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router.types import DEADLINE


@dataclass(frozen=True, slots=True)
class StageSpec:
    id: str
    model: str
    session: str  # `<query>/<stage>`
    budget_ms: float  # the query analysis' share of the SLO
    after: str | None = None
    min_ms: float = 0.0  # the least time a request of the stage takes (l(1), fastest GPU)


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A query as the router runs it: stages in the plan's order, the root first."""

    id: str
    slo_ms: float
    stages: tuple[StageSpec, ...]
    _children: dict[str | None, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _by_id: dict[str, StageSpec] = field(init=False, repr=False, compare=False)
    _tails: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kids: dict[str | None, list[str]] = {}
        for s in self.stages:
            kids.setdefault(s.after, []).append(s.id)
        object.__setattr__(self, "_children", {k: tuple(v) for k, v in kids.items()})
        object.__setattr__(self, "_by_id", {s.id: s for s in self.stages})
        roots = self._children.get(None, ())
        if len(roots) != 1:
            raise ValueError(f"query {self.id}: {len(roots)} stages without 'after', not 1")
        for s in self.stages:
            if s.after is not None and s.after not in self._by_id:
                raise ValueError(f"query {self.id}: stage {s.id} after unknown {s.after}")
        tails: dict[str, float] = {}

        def tail(sid: str) -> float:
            if sid not in tails:
                kids = self._children.get(sid, ())
                tails[sid] = max((self._by_id[c].min_ms + tail(c) for c in kids), default=0.0)
            return tails[sid]

        for s in self.stages:
            tail(s.id)
        object.__setattr__(self, "_tails", tails)

    @property
    def root(self) -> StageSpec:
        return self._by_id[self._children[None][0]]

    def stage(self, sid: str) -> StageSpec:
        return self._by_id[sid]

    def children(self, sid: str) -> tuple[str, ...]:
        return self._children.get(sid, ())

    def tail(self, sid: str) -> float:
        """The least time the stages after `sid` need, on the longest path below it."""
        return self._tails[sid]

    @property
    def least_ms(self) -> float:
        """The least time any request of the query takes: the root's min_ms and tail."""
        return self.root.min_ms + self.tail(self.root.id)


@dataclass(frozen=True, slots=True)
class RunStage:
    stage: str
    deadline: float  # of each of the stage's requests (ms, the driver's clock)


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str
    detail: str = ""
    stage: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    pass


Step = RunStage | Fail | Finish


class QueryRun:
    """One query request's progress: events in (`start`, `stage_done`, `stage_failed`, each
    with `now`), steps out. `reserve_ms` is kept back from the deadline for the answer."""

    def __init__(self, spec: QuerySpec, arrival: float, reserve_ms: float = 0.0) -> None:
        self.spec = spec
        self.arrival = arrival
        self.deadline = arrival + spec.slo_ms - reserve_ms
        self.running: set[str] = set()
        self.done: list[str] = []
        self.outcome: Fail | Finish | None = None

    @property
    def over(self) -> bool:
        return self.outcome is not None

    def start(self, now: float) -> list[Step]:
        if self.over or self.running or self.done:
            return []
        return self._launch(now, [self.spec.root.id])

    def stage_done(self, now: float, sid: str) -> list[Step]:
        """Every request of `sid` was answered: start its children (or finish)."""
        if self.over or sid not in self.running:
            return []
        self.running.discard(sid)
        self.done.append(sid)
        return self._launch(now, list(self.spec.children(sid)))

    def stage_failed(self, now: float, sid: str, reason: str, detail: str = "") -> list[Step]:
        """A request of `sid` was not served (dropped, refused): the query fails with it."""
        if self.over or sid not in self.running:
            return []
        return [self._end(Fail(reason, detail, sid))]

    def _launch(self, now: float, stages: list[str]) -> list[Step]:
        out: list[Step] = []
        for sid in stages:
            s = self.spec.stage(sid)
            tail = self.spec.tail(sid)
            if now + s.min_ms + tail > self.deadline:
                left = self.deadline - now
                detail = (
                    f"stage {sid} and those after it need at least {s.min_ms + tail:.1f} ms, "
                    f"{max(left, 0.0):.1f} ms of the query's {self.spec.slo_ms:g} ms are left"
                )
                return [self._end(Fail(DEADLINE, detail, sid))]
            self.running.add(sid)
            out.append(RunStage(sid, self.deadline - tail))
        if not self.running:
            out.append(self._end(Finish()))
        return out

    def _end(self, outcome: Fail | Finish) -> Fail | Finish:
        self.outcome = outcome
        self.running.clear()
        return outcome

    def planned_end(self, sid: str) -> float:
        """When `sid` should end if every stage up to it kept to its budget."""
        total, s = 0.0, self.spec.stage(sid)
        while True:
            total += s.budget_ms
            if s.after is None:
                return self.arrival + total
            s = self.spec.stage(s.after)
