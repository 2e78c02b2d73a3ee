"""A workload of fine-tuned heads on common backbones, for `tnx bench plan`'s sharing table.

Each profiled model of the set becomes a backbone with `heads` heads (Nexus's motivating
case, §5: many models that differ only in their last layers). A head's own latency is a
final layer's: 0.05 ms plus 3 % of its backbone's l(b), and it holds 8 MB plus 3 % of the
backbone's per-sample memory. Served split, a head is its backbone's prefix (the backbone's
profile) then its suffix (the head's); served whole, it is one model whose l(b) is the
sum, which grants the unshared plan no ensemble overhead. Sessions: rates log-uniform in
[5, 500] req/s, SLOs uniform in [50, 200] ms, seeded.
"""

from __future__ import annotations

import math
import random

from control.types import Session
from model_repo_tools.prefix_names import suffix_name
from model_repo_tools.profiles import LatencyCurve, ProfileSet

HEAD_FIXED_MS = 0.05
HEAD_SHARE = 0.03
HEAD_WEIGHTS = 8_000_000


def _scaled(c: LatencyCurve, model: str, fixed: float, share: float, weights: int) -> LatencyCurve:
    return LatencyCurve(
        model=model,
        gpu_type=c.gpu_type,
        batches=c.batches,
        latencies_ms=tuple(fixed + share * x for x in c.latencies_ms),
        memories=tuple(int(weights + share * max(0, m - c.weights_bytes)) for m in c.memories),
        weights_bytes=weights,
    )


def _summed(a: LatencyCurve, b: LatencyCurve, model: str) -> LatencyCurve:
    return LatencyCurve(
        model=model,
        gpu_type=a.gpu_type,
        batches=a.batches,
        latencies_ms=tuple(x + y for x, y in zip(a.latencies_ms, b.latencies_ms, strict=True)),
        memories=tuple(x + y for x, y in zip(a.memories, b.memories, strict=True)),
        weights_bytes=a.weights_bytes + b.weights_bytes,
    )


def heads_on_backbones(
    ps: ProfileSet, gpu_type: str, heads: int, seed: int
) -> tuple[dict, dict, list[Session]]:
    """(curves served split, curves served whole, sessions): one session per head."""
    rng = random.Random(seed)
    split: dict = {}
    whole: dict = {}
    sessions = []
    for (model, ty), curve in sorted(ps.curves().items()):
        if ty != gpu_type:
            continue
        prefix = f"prefix_{model}"
        split[(prefix, ty)] = LatencyCurve(
            prefix, ty, curve.batches, curve.latencies_ms, curve.memories, curve.weights_bytes
        )
        for h in range(heads):
            name = f"{model}_h{h}"
            head = _scaled(
                curve, suffix_name(prefix, name), HEAD_FIXED_MS, HEAD_SHARE, HEAD_WEIGHTS
            )
            split[(head.model, ty)] = head
            split[(name, ty)] = whole[(name, ty)] = _summed(curve, head, name)
            rate = round(math.exp(rng.uniform(math.log(5), math.log(500))), 2)
            slo = round(rng.uniform(50, 200), 1)
            sessions.append(Session(id=f"{name}/s", model=name, slo_ms=slo, rate=rate))
    return split, whole, sessions
