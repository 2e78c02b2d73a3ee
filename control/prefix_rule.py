"""Which sessions on a GPU run as one prefix batch: the rule the validator, the router and
the planner share (Nexus §5 prefix batching; docs/prefix-sharing.md).

Sessions on one GPU whose models share a prefix P (`model_repo_tools.prefix_names`: model M
served as P then `P__M`, all profiled on the GPU's type) run, once per cycle, as one batch
of P holding all their requests and a batch of each one's suffix, taking

    l_P(Σ b) + Σ l_S(b)   of the cycle (memory alike), and the same of each one's SLO,

where that is feasible (Σ b within P's profile, d + that latency within every member's
SLO); otherwise each runs whole, as its own model (its ensemble). The planner prices every
group it places as such a batch (control.prefix_plan). A plan that priced such sessions
whole (an incremental re-plan: control.incremental does not see groups) stays valid where
the prefix batch is no slower than the members whole, as where the prefix's l(b) grows
slower than linearly (GPUs) it is; where it is slower (seen on a CPU, where a suffix's
call costs as much as the batch it saves), the validator says by how much.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from model_repo_tools.profiles import LatencyCurve

# (session, model, batch, SLO ms) of one allocation on the GPU.
Alloc = tuple[str, str, int, float]
Curve = Callable[[str], LatencyCurve | None]  # model → its profile on the GPU's type


@dataclass(slots=True, frozen=True)
class PrefixBatch:
    prefix: str
    sessions: frozenset[str]
    latency_ms: float  # l_P(Σ b) + Σ l_S(b)
    memory: float
    batch: int  # Σ b, the prefix's batch


def prefix_batches(
    allocs: Iterable[Alloc],
    duty: float,
    split: Mapping[str, tuple[str, str]],
    curve: Curve,
    slack: float = 1e-6,
) -> dict[str, PrefixBatch]:
    """Per prefix, the sessions of `allocs` that run as its one prefix batch (the module
    docstring's rule); a prefix absent runs its sessions whole."""
    by_prefix: dict[str, list[Alloc]] = {}
    for a in allocs:
        parts = split.get(a[1])
        if parts is not None:
            by_prefix.setdefault(parts[0], []).append(a)
    out: dict[str, PrefixBatch] = {}
    for prefix, group in by_prefix.items():
        if len(group) < 2:
            continue
        p = curve(prefix)
        sufs = [curve(split[a[1]][1]) for a in group]
        if p is None or any(c is None for c in sufs):
            continue
        total = sum(a[2] for a in group)
        if total > p.max_batch or any(
            a[2] > c.max_batch
            for a, c in zip(group, sufs, strict=True)  # type: ignore[union-attr]
        ):
            continue
        lat = p.latency(total) + sum(c.latency(a[2]) for a, c in zip(group, sufs, strict=True))  # type: ignore[union-attr]
        if any(duty + lat > a[3] * (1 + slack) for a in group):
            continue
        mem = p.memory(total) + sum(c.memory(a[2]) for a, c in zip(group, sufs, strict=True))  # type: ignore[union-attr]
        out[prefix] = PrefixBatch(prefix, frozenset(a[0] for a in group), lat, mem, total)
    return out
