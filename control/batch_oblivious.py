"""Batch-oblivious baseline, as Clipper and TF-Serving allocate: each session alone
on ceil(r / T) GPUs, T its peak throughput under the SLO (2·l(b) ≤ SLO), no sharing."""

from __future__ import annotations

import math

from control.nodes import Node
from control.problem import Demand
from control.tables import EPS


def plan_oblivious(demands: list[Demand]) -> list[Node]:
    nodes: list[Node] = []
    for d in demands:
        t = d.table
        b = t.peak_batch(d.slo, d.gclass.memory)
        if b is None:
            continue
        duty = t.lat[b]
        n = max(1, math.ceil(d.rate * duty / (1000.0 * b) - EPS))
        # Batch b, not ceil(r·d/1000): it holds the arrivals, and l(b) = d by construction.
        nodes += [Node.alone(d, d.rate / n, b) for _ in range(n)]
    return nodes
