"""Batch-oblivious baseline, as Clipper and TF-Serving allocate: each session alone
on ceil(r / T) GPUs, T its peak throughput under the SLO (2·l(b) ≤ SLO), no sharing."""

from __future__ import annotations

import math

from control.nodes import Node, Piece
from control.problem import Demand


def plan_oblivious(demands: list[Demand]) -> list[Node]:
    nodes: list[Node] = []
    for d in demands:
        t = d.table
        b = t.peak_batch(d.slo, d.gclass.memory)
        if b is None:
            continue
        duty = t.lat[b]
        n = max(1, math.ceil(d.rate * duty / (1000.0 * b) - 1e-9))
        share = d.rate / n
        for _ in range(n):
            node = Node(d.gclass, duty)
            # Batch b, not ceil(r·d/1000): it holds the arrivals, and l(b) = d by construction.
            node.pieces[d.id] = Piece(d, share, b)
            node.load = sum(p.lat for p in node.pieces.values())
            node.mem = sum(p.mem for p in node.pieces.values())
            nodes.append(node)
    return nodes
