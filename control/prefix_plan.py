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
from control.prefix_rule import prefix_batches
from control.problem import Demand
from control.tables import EPS, BatchTable
from model_repo_tools.prefix_names import parts
from model_repo_tools.profiles import LatencyCurve

Policy = Callable[[list[Demand]], list[Node]]


@dataclass(slots=True, frozen=True)
class Share:
    """How a demand's model runs split: its prefix model and the two parts' tables."""

    prefix: str
    suffix: str
    prefix_table: BatchTable
    suffix_table: BatchTable


# A chunk of a group holds at most the prefix's largest batch over MEMBER_SHARE members
# (every member adds a sample to each prefix batch) and CAPACITY of its best throughput
# (the rest is the suffixes'): `tnx bench plan`'s sharing table (BENCHMARKS.md).
MEMBER_SHARE = 4
CAPACITY = 0.7


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
    return None if p is None or s is None else Share(got[0], got[1], p, s)


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


def chunks(members: list[Demand]) -> list[list[Demand]]:
    """A group's members cut into chunks that one GPU can carry: in order of SLO (so a
    chunk's tightest SLO is near all of its members'), at most a quarter of the prefix's
    largest batch of members (each member adds at least one sample to every prefix batch)
    and at most 70 % of the prefix's best throughput within that SLO (the rest is the
    suffixes'). A group split over GPUs by rate would run every member on every GPU."""
    p_tab = members[0].share.prefix_table  # type: ignore[union-attr]
    most = max(2, p_tab.max_batch // MEMBER_SHARE)
    out: list[list[Demand]] = []
    cur: list[Demand] = []
    rate = 0.0
    for d in sorted(members, key=lambda d: (d.slo, -d.rate, d.id)):
        if cur and (len(cur) >= most or rate + d.rate > _capacity(p_tab, cur[0].slo)):
            out.append(cur)
            cur, rate = [], 0.0
        cur.append(d)
        rate += d.rate
    return out + [cur] if cur else out


def _capacity(t: BatchTable, slo: float) -> float:
    """CAPACITY of the highest rate `t` serves back to back with 2·l(b) ≤ SLO, req/s."""
    b = t.peak_batch(slo)
    return 0.0 if b is None else CAPACITY * 1000.0 * b / t.lat[b]


def contract(demands: list[Demand]) -> tuple[list[Demand], dict[str, list[Demand]]]:
    """The demands with each chunk of a group (same prefix, same GPU class; `chunks`) of
    two or more members replaced by one demand; and group demand id → its members.
    Merged even where it needs a little more of a GPU (a model whose l(b) is nearly
    linear gains little from a bigger batch): members left whole that the packers put
    together would run as one prefix batch anyway, priced as they were not."""
    by_group: dict[tuple[str, int], list[Demand]] = {}
    for d in demands:
        share = getattr(d, "share", None)
        if share is not None:
            by_group.setdefault((share.prefix, id(d.gclass)), []).append(d)
    out: list[Demand] = []
    members: dict[str, list[Demand]] = {}
    grouped: set[str] = set()
    for (prefix, _), group in by_group.items():
        if len(group) < 2:
            continue
        gclass = group[0].gclass
        for k, ms in enumerate(chunks(group)):
            if len(ms) < 2:
                continue
            table = group_table(ms, gclass.gpu_type)
            slo = min(d.slo for d in ms)
            if table is None or table.saturated_batch(slo, gclass.memory) is None:
                continue
            rate = sum(d.rate for d in ms)
            gid = f"{prefix}@{gclass.name}#{k}"
            out.append(Demand(gid, prefix, slo, rate, table, gclass))
            members[gid] = ms
            grouped.update(d.id for d in ms)
    return [d for d in demands if d.id not in grouped] + out, members


def expand(nodes: list[Node], members: Mapping[str, list[Demand]]) -> list[Node]:
    """Each group piece replaced, on its node, by one piece per member (its share of the
    piece's rate, at its least batch for the node's cycle); then `separate`."""
    units: dict[int, dict[str, list[list[str]]]] = {}
    for n in nodes:
        mine: dict[str, list[list[str]]] = units.setdefault(id(n), {})
        for gid in [k for k in n.pieces if k in members]:
            piece = n.pieces.pop(gid)
            group = members[gid]
            total = sum(d.rate for d in group)
            for d in group:
                rate = piece.rate * d.rate / total
                old = n.pieces.get(d.id)
                if old is not None:  # kept there unshared by an incremental re-plan
                    rate += old.rate
                batch = d.table.batch_for(rate, n.duty)
                n.pieces[d.id] = Piece(replace(d, alts=()), rate, batch)
            mine.setdefault(group[0].share.prefix, []).append([d.id for d in group])  # type: ignore[union-attr]
        taken = {i for us in mine.values() for u in us for i in u}
        for sid, p in n.pieces.items():
            if p.demand.share is not None and sid not in taken:
                mine.setdefault(p.demand.share.prefix, []).append([sid])
    return separate(nodes, units)


def _runs(n: Node) -> tuple[float, float, bool]:
    """(Σ latency, Σ memory, every SLO kept) of `n` as the router runs it: sessions sharing
    a prefix as the prefix batch control.prefix_rule makes of them, the others whole."""
    split: dict[str, tuple[str, str]] = {}
    curves: dict[str, LatencyCurve] = {}
    for p in n.pieces.values():
        d = p.demand
        curves[d.model] = d.table.curve
        if d.share is not None:
            split[d.model] = (d.share.prefix, d.share.suffix)
            curves[d.share.prefix] = d.share.prefix_table.curve
            curves[d.share.suffix] = d.share.suffix_table.curve
    allocs = [(sid, p.demand.model, p.batch, p.demand.slo) for sid, p in n.pieces.items()]
    runs = prefix_batches(allocs, n.duty, split, curves.get, slack=EPS)
    inside = {sid for r in runs.values() for sid in r.sessions}
    rest = [p for sid, p in n.pieces.items() if sid not in inside]
    lat = sum(p.lat for p in rest) + sum(r.latency_ms for r in runs.values())
    mem = sum(p.mem for p in rest) + sum(r.memory for r in runs.values())
    slo = all(n.duty + p.lat <= p.demand.slo * (1 + EPS) for p in rest)
    return lat, mem, slo


def _valid(n: Node) -> bool:
    lat, mem, slo = _runs(n)
    return slo and lat <= n.duty * (1 + EPS) and mem <= n.gclass.memory


def separate(nodes: list[Node], units: Mapping[int, dict[str, list[list[str]]]]) -> list[Node]:
    """Where a node holds several units of one prefix (group pieces, or members planned
    whole) and, run as the router runs them (control.prefix_rule), they break a rule of
    the node, the smaller units move to nodes of their own at the same cycle and batches
    (where each was valid already)."""
    out = list(nodes)
    for n in nodes:
        mine = units.get(id(n), {})
        for prefix in [p for p, us in mine.items() if len(us) > 1]:
            us = sorted(mine[prefix], key=lambda u: -sum(n.pieces[i].lat for i in u))
            while len(us) > 1 and not _valid(n):
                moved = us.pop()
                alone = Node(n.gclass, n.duty, {i: n.pieces.pop(i) for i in moved})
                alone.load, alone.mem, _ = _runs(alone)
                out.append(alone)
        n.load, n.mem, _ = _runs(n)
    return out


def sharing(policy: Policy) -> Policy:
    """`policy` with every prefix group planned as one load (the module docstring)."""

    def plan(demands: list[Demand]) -> list[Node]:
        merged, members = contract(demands)
        if not members:
            return policy(demands)
        return expand(policy(merged), members)

    plan.__doc__ = policy.__doc__
    return plan
