"""The fleet contract (`fleet.json`): the executors (GPUs, or CPUs) and the servers that hold them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from model_repo_tools.contracts import ContractFile, unique_ids


class FleetGpu(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    gpu_type: str = Field(min_length=1)
    memory_bytes: int = Field(gt=0)
    server: str = Field(min_length=1, description="gRPC host:port of the Triton server")
    http: str | None = Field(default=None, description="HTTP host:port of the Triton server")
    metrics: str | None = None
    pid: int | None = None
    log: str | None = None


class Fleet(ContractFile):
    gpus: Annotated[list[FleetGpu], unique_ids("gpu id")] = Field(default_factory=list)

    def by_id(self) -> dict[str, FleetGpu]:
        return {g.id: g for g in self.gpus}
