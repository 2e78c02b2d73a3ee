"""Baseline batching policies for `tnx simulate`, each driven like the live
`router.policy.BatchPolicy` (events in, actions out) on the same plan and trace."""

from __future__ import annotations

from collections.abc import Mapping

from bench.baselines.base import Baseline
from bench.baselines.clipper import Clipper
from bench.baselines.clockwork import Clockwork
from bench.baselines.triton import TritonBatcher
from control.types import Plan
from model_repo_tools.profiles import LatencyCurve
from router.policy import BatchPolicy
from router.types import DROP_MODES, DropMode
from tnx.errors import UserInputError

BASELINES: dict[str, type[Baseline]] = {
    "clipper": Clipper,
    "clockwork": Clockwork,
    "triton": TritonBatcher,
}
POLICIES = ("tnx", *BASELINES)


def make_policy(
    name: str,
    plan: Plan,
    curves: Mapping[tuple[str, str], LatencyCurve],
    drop: str = "early",
) -> BatchPolicy | Baseline:
    """A fresh policy `name` (tnx with its `drop` mode, or a baseline) over `plan`."""
    if name == "tnx":
        if drop not in DROP_MODES:
            raise UserInputError(f"--drop: unknown {drop!r} (choose {', '.join(DROP_MODES)})")
        mode: DropMode = drop  # type: ignore[assignment]
        return BatchPolicy(plan, curves, drop=mode)
    if name not in BASELINES:
        raise UserInputError(f"--policy: unknown {name!r} (choose {', '.join(POLICIES)})")
    return BASELINES[name](plan, curves)
