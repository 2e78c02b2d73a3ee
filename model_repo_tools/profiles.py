"""Batch-latency profiles (`profiles.json`) and the latency function l(b) of DESIGN.md.

l(b) is linear between listed batch sizes, l(smallest) below the smallest, and
undefined above the largest; memory(b) follows the same rule. A batch row may
also carry how its latency was measured (`p10_ms`, `p90_ms`, `samples`): optional,
written only when known, so files without them load as before and readers that
plan on `latency_ms` alone need not look at them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_repo_tools.contracts import ContractFile


class BatchPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch: int = Field(ge=1)
    latency_ms: float = Field(gt=0)
    memory_bytes: int = Field(default=0, ge=0)
    # The spread of the measured samples behind latency_ms (which is a fitted statistic).
    p10_ms: float | None = Field(default=None, ge=0)
    p90_ms: float | None = Field(default=None, ge=0)
    samples: int | None = Field(default=None, ge=1)


class Profile(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    gpu_type: str = Field(min_length=1)
    weights_bytes: int = Field(default=0, ge=0)
    batches: list[BatchPoint] = Field(min_length=1)

    @field_validator("batches")
    @classmethod
    def _sorted_unique(cls, v: list[BatchPoint]) -> list[BatchPoint]:
        v = sorted(v, key=lambda p: p.batch)
        sizes = [p.batch for p in v]
        if len(set(sizes)) != len(sizes):
            raise ValueError("batch sizes must be unique")
        return v


class ProfileSet(ContractFile):
    version: int = 1
    profiles: list[Profile] = Field(default_factory=list)

    def curves(self) -> dict[tuple[str, str], LatencyCurve]:
        """(model, gpu_type) → LatencyCurve."""
        return {(p.model, p.gpu_type): LatencyCurve.from_profile(p) for p in self.profiles}

    def gpu_types(self) -> list[str]:
        return sorted({p.gpu_type for p in self.profiles})


@dataclass(slots=True, frozen=True)
class LatencyCurve:
    """l(b) and memory(b) for one (model, gpu type), as piecewise-linear functions."""

    model: str
    gpu_type: str
    batches: tuple[int, ...]
    latencies_ms: tuple[float, ...]
    memories: tuple[int, ...]
    weights_bytes: int = 0

    @classmethod
    def from_profile(cls, p: Profile) -> LatencyCurve:
        return cls(
            model=p.model,
            gpu_type=p.gpu_type,
            batches=tuple(q.batch for q in p.batches),
            latencies_ms=tuple(q.latency_ms for q in p.batches),
            memories=tuple(q.memory_bytes for q in p.batches),
            weights_bytes=p.weights_bytes,
        )

    @classmethod
    def from_points(cls, model: str, gpu_type: str, points: dict[int, float]) -> LatencyCurve:
        sizes = sorted(points)
        return cls(
            model, gpu_type, tuple(sizes), tuple(points[b] for b in sizes), (0,) * len(sizes)
        )

    @property
    def max_batch(self) -> int:
        return self.batches[-1]

    def _interp(self, b: float, ys: tuple[float, ...] | tuple[int, ...]) -> float:
        if b > self.batches[-1]:
            raise ValueError(
                f"{self.model}/{self.gpu_type}: batch {b} above profiled {self.max_batch}"
            )
        if b <= self.batches[0]:
            return float(ys[0])
        i = bisect.bisect_left(self.batches, b)
        if self.batches[i] == b:
            return float(ys[i])
        b0, b1 = self.batches[i - 1], self.batches[i]
        y0, y1 = ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (b - b0) / (b1 - b0)

    def latency(self, b: float) -> float:
        """l(b) in milliseconds."""
        return self._interp(b, self.latencies_ms)

    def latency_table(self) -> tuple[float, ...]:
        """l(b) at every integer b up to max_batch, by b (index 0 repeats batch 1): the
        same floats as `latency`, for callers that ask many times."""
        return tuple(self.latency(max(b, 1)) for b in range(self.max_batch + 1))

    def memory(self, b: float) -> float:
        """Bytes the model holds on the GPU when run at batch b."""
        return self._interp(b, self.memories)

    def throughput(self, b: float) -> float:
        """Requests per second when batches of b run back to back."""
        return 1000.0 * b / self.latency(b)
