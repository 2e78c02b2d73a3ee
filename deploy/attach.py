"""`tnx fleet attach`: a fleet.json for Triton servers that already run (NGC containers).

Every server given must qualify (`control.qualify`: live, explicit model control, one
GPU, its memory known); this module asks them, waits for those still starting, and
names in one line each server that does not.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from control.qualify import (
    Address,
    Problem,
    Reading,
    gpu_ids,
    gpu_totals,
    parse_address,
    qualify,
    read_server,
)
from deploy.services import wait_until
from model_repo_tools.fleet import Fleet, FleetGpu
from tnx.errors import FleetError, UserInputError

# attach's checks live in control (fleet discovery makes them too); named here as well.
__all__ = [
    "Address",
    "Problem",
    "Reading",
    "attach",
    "gpu_ids",
    "gpu_totals",
    "parse_address",
    "qualify",
    "read_server",
]


def attach(
    servers: Sequence[str],
    gpu_type: str,
    gpu_memory: int | None = None,
    wait_s: float = 0.0,
    timeout_s: float = 5.0,
) -> Fleet:
    """The fleet of `servers` if every one qualifies; else FleetError, one line naming each
    server that does not. Servers not reachable or not live yet are asked again for up to
    `wait_s` seconds (pods of a StatefulSet come up one after another)."""
    if not servers:
        raise UserInputError("no server given: name each by its gRPC host:port")
    if not gpu_type.strip():
        raise UserInputError("--gpu-type must not be empty")
    if gpu_memory is not None and gpu_memory <= 0:
        raise UserInputError(f"--gpu-memory {gpu_memory}: must be positive")
    addresses = [parse_address(s) for s in servers]
    seen: set[str] = set()
    for a in addresses:
        if str(a) in seen:
            raise UserInputError(f"server {a} is given twice")
        seen.add(str(a))
    readings = {str(a): read_server(a, timeout_s) for a in addresses}
    deadline = time.monotonic() + wait_s

    def all_up() -> bool:
        for a in addresses:
            if readings[str(a)].unreachable is not None or not readings[str(a)].live:
                readings[str(a)] = read_server(a, min(timeout_s, 1.0))
        return all(r.unreachable is None and r.live for r in readings.values())

    if wait_s > 0 and not all_up():
        wait_until(all_up, deadline - time.monotonic(), interval_s=1.0)
    verdicts = [
        qualify(readings[str(a)], gid, gpu_type.strip(), gpu_memory)
        for a, gid in zip(addresses, gpu_ids(addresses), strict=True)
    ]
    problems = [v for v in verdicts if isinstance(v, Problem)]
    if problems:
        raise FleetError("; ".join(str(p) for p in problems))
    return Fleet(gpus=[v for v in verdicts if isinstance(v, FleetGpu)])
