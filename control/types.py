"""Sessions, queries and plans: the `workload.json` and `plan.json` contracts of DESIGN.md."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from model_repo_tools.contracts import ContractFile, unique_ids


class Session(BaseModel):
    """A model served under one latency SLO at a requested rate."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    slo_ms: float = Field(gt=0)
    rate: float = Field(ge=0)


class Stage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    after: str | None = None
    fanout: float = Field(default=1.0, gt=0)  # expected items per parent request (planning)


class Query(BaseModel):
    """A tree of stages sharing one end-to-end SLO (Nexus §6.2)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    slo_ms: float = Field(gt=0)
    rate: float = Field(ge=0)
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _is_tree(self) -> Query:
        ids = [s.id for s in self.stages]
        if len(set(ids)) != len(ids):
            raise ValueError(f"query {self.id}: duplicate stage id")
        roots = [s for s in self.stages if s.after is None]
        if len(roots) != 1:
            raise ValueError(f"query {self.id}: needs exactly one stage without 'after'")
        for s in self.stages:
            if s.after is not None and s.after not in ids:
                raise ValueError(f"query {self.id}: stage {s.id} is after unknown stage {s.after}")
        return self


class Workload(ContractFile):
    sessions: Annotated[list[Session], unique_ids("session id")] = Field(default_factory=list)
    queries: list[Query] = Field(default_factory=list)


class Allocation(BaseModel):
    model_config = ConfigDict(extra="allow")

    session: str
    model: str
    batch: int = Field(ge=1)
    rate: float = Field(ge=0)
    slo_ms: float = Field(gt=0)


class GpuPlan(BaseModel):
    model_config = ConfigDict(extra="allow")

    gpu: str
    gpu_type: str
    duty_cycle_ms: float = Field(gt=0)
    allocations: list[Allocation] = Field(default_factory=list)
    # The router that alone dispatches to this GPU (its advertised URL), in the plan the
    # control plane serves to routers; None: every router may (a fixed setup, a plan file).
    owner: str | None = None

    @model_serializer(mode="wrap")
    def _owner_when_named(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # plan.json stays as DESIGN.md has it: no owner key unless a router owns the GPU.
        data = handler(self)
        if data.get("owner") is None:
            data.pop("owner", None)
        return data


class Unplaced(BaseModel):
    model_config = ConfigDict(extra="allow")

    session: str
    rate: float = Field(ge=0)
    reason: str
    model: str | None = None  # so a router can say "known, not placed now" (503, not 404)


class StagePlan(Stage):
    """A query's stage as routers run it: its session and the SLO share query analysis gave it."""

    session: str = Field(min_length=1)  # `<query>/<stage>`
    budget_ms: float = Field(gt=0)


class QueryPlan(Query):
    """A query in the plan routers fetch: its end-to-end SLO and its stages' budgets."""

    rate: float = Field(default=0.0, ge=0)
    stages: list[StagePlan] = Field(min_length=1)


class Plan(ContractFile):
    version: int = 1
    gpus: list[GpuPlan] = Field(default_factory=list)
    unplaced: list[Unplaced] = Field(default_factory=list)
    # Added for `POST /v1/queries/{query}`; absent when empty, so a plan without queries reads
    # and writes as before, and readers that do not know the field keep ignoring it.
    queries: list[QueryPlan] = Field(default_factory=list)
    # Added: DESIGN.md's lower bound on GPUs for the sessions planned, as the planner
    # computed it (absent where unknown). A re-plan from this plan reads it as the old
    # rates' bound instead of computing it again (control.scheduler).
    lower_bound: int | None = Field(default=None, ge=0)

    @model_serializer(mode="wrap")
    def _added_when_any(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if not data.get("queries"):
            data.pop("queries", None)
        if data.get("lower_bound") is None:
            data.pop("lower_bound", None)
        return data

    def rates(self) -> dict[str, float]:
        """Each session's rate summed over the plan's GPUs."""
        out: dict[str, float] = {}
        for g in self.gpus:
            for a in g.allocations:
                out[a.session] = out.get(a.session, 0.0) + a.rate
        return out
