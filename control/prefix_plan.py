"""Prefix batching in the planner: a group's sessions packed as one load (Nexus, Shen et al.,
SOSP 2019, §5 prefix batching; the group's latency in §6's terms).

Sessions whose models share a prefix (`model_repo_tools.shared_prefix.parts`: model M
served as prefix P then suffix `P__M`, all three profiled) and that resolved to the same
GPU class are planned as one demand of their summed rate and tightest SLO. On a GPU,
per duty cycle, the group runs one prefix batch holding every member's requests, then
one suffix batch per member, so it takes

    l_P(Σ_s b_s) + Σ_s l_{S_s}(b_s)      and holds      mem_P(Σ_s b_s) + Σ_s mem_{S_s}(b_s).

The group's table is that sum at each batch B of the group, every member getting
b_s = ceil(B · r_s / R) (its share of B, rounded up): an upper bound of what any split
of the group's rate needs, since a member's own least batch ceil(r_s · d / 1000) is never
more. So the packers keep DESIGN.md's per-GPU invariants with the group's latency, and
`expand` turns each packed group piece back into one allocation per member session
(plan.json keeps its allocations per session; the validator and the router read the group
from the models' names again).

`sharing(policy)` wraps a policy with the two steps; a member alone on its class, or a
group whose tightest SLO its table cannot meet, is planned as the whole model (its
ensemble's profile).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from control.nodes import Node, Piece
from control.problem import Demand
from control.tables import EPS, BatchTable
from model_repo_tools.prefix_names import parts
from model_repo_tools.profiles import LatencyCurve

Policy = Callable[[list[Demand]], list[Node]]


@dataclass(slots=True, frozen=True)
class Share:
    """How a demand's model runs split: its prefix model and the two parts' tables."""

    prefix: str
    prefix_table: BatchTable
    suffix_table: BatchTable


def split_models(curves: Mapping[tuple[str, str], LatencyCurve]) -> dict[str, tuple[str, str]]:
    """model → (prefix, suffix) for the profiled models served split."""
    return parts({m for m, _ in curves})


def share_of(
    model: str,
    gpu_type: str,
    table: Callable[[str, str], BatchTable | None],
    split: Mapping[str, tuple[str, str]],
) -> Share | None:
    """The Share of `model` on `gpu_type` where its prefix and suffix are both profiled."""
    got = split.get(model)
    if got is None:
        return None
    p, s = table(got[0], gpu_type), table(got[1], gpu_type)
    return None if p is None or s is None else Share(got[0], p, s)


def group_table(members: list[Demand], gpu_type: str) -> BatchTable | None:
    """The group's l(B) and memory(B) (the module docstring's sums); None when even B = 1
    passes a part's profiled batches."""
    total_rate = sum(d.rate for d in members)
    shares = [d.rate / total_rate for d in members]
    p_tab = members[0].share.prefix_table  # type: ignore[union-attr]
    lat: list[float] = []
    mem: list[float] = []
    for big_b in range(1, p_tab.max_batch + 1):
        bs = [max(1, math.ceil(big_b * f - EPS)) for f in shares]
        total = sum(bs)
        tabs = [d.share.suffix_table for d in members]  # type: ignore[union-attr]
        if total > p_tab.max_batch or any(b > t.max_batch for b, t in zip(bs, tabs, strict=True)):
            break
        lat.append(p_tab.lat[total] + sum(t.lat[b] for b, t in zip(bs, tabs, strict=True)))
        mem.append(p_tab.mem[total] + sum(t.mem[b] for b, t in zip(bs, tabs, strict=True)))
    if not lat:
        return None
    curve = LatencyCurve(
        model=members[0].share.prefix,  # type: ignore[union-attr]
        gpu_type=gpu_type,
        batches=tuple(range(1, len(lat) + 1)),
        latencies_ms=tuple(lat),
        memories=tuple(int(m) for m in mem),
    )
    return BatchTable.from_curve(curve)


def contract(demands: list[Demand]) -> tuple[list[Demand], dict[str, list[Demand]]]:
    """The demands with each group (same prefix, same GPU class, two or more members)
    replaced by one demand; and group demand id → its members."""
    by_group: dict[tuple[str, int], list[Demand]] = {}
    for d in demands:
        share = getattr(d, "share", None)
        if share is not None:
            by_group.setdefault((share.prefix, id(d.gclass)), []).append(d)
    out: list[Demand] = []
    members: dict[str, list[Demand]] = {}
    grouped: set[str] = set()
    for (prefix, _), ms in by_group.items():
        if len(ms) < 2:
            continue
        gclass = ms[0].gclass
        table = group_table(ms, gclass.gpu_type)
        slo = min(d.slo for d in ms)
        if table is None or table.saturated_batch(slo, gclass.memory) is None:
            continue
        gid = f"{prefix}@{gclass.name}"
        out.append(Demand(gid, prefix, slo, sum(d.rate for d in ms), table, gclass))
        members[gid] = ms
        grouped.update(d.id for d in ms)
    return [d for d in demands if d.id not in grouped] + out, members


def expand(nodes: list[Node], members: Mapping[str, list[Demand]]) -> list[Node]:
    """Each group piece replaced, on its node, by one piece per member: its share of the
    piece's rate at its least batch for the node's cycle."""
    for n in nodes:
        for gid in [k for k in n.pieces if k in members]:
            piece = n.pieces.pop(gid)
            group = members[gid]
            total = sum(d.rate for d in group)
            for d in group:
                rate = piece.rate * d.rate / total
                mine = n.pieces.get(d.id)
                if mine is not None:  # kept there unshared by an incremental re-plan
                    rate += mine.rate
                batch = d.table.batch_for(rate, n.duty)
                n.pieces[d.id] = Piece(replace(d, alts=()), rate, batch)
    return nodes


def sharing(policy: Policy) -> Policy:
    """`policy` with every prefix group planned as one load (the module docstring)."""

    def plan(demands: list[Demand]) -> list[Node]:
        merged, members = contract(demands)
        if not members:
            return policy(demands)
        return expand(policy(merged), members)

    plan.__doc__ = policy.__doc__
    return plan
