"""The `simulated` part of `tnx bench router`: the simulator beside the measured goodput levels.

For each goodput row of a router system (`early`, `lazy`, `none`), `bench.simulate.run` drives
the same `router.policy.BatchPolicy` with that drop mode on the virtual clock, over the plan and
profiles the goodput part wrote (plan-convnet.json, profiles.json), at the rate k6 sent, for
the same seconds. Arrivals are `even` (evenly spaced, as k6 sends them) and `poisson`. Batch
times are the profile's l(n) times log-normal noise whose CV is that of the fleet's own l(b)
timings at the plan batch (`PlanSetup.latency_cv`); a third run, `even, measured batch times`,
also multiplies them by the level's measured slow-down under load (the router's mean time a
batch was in flight over l(mean batch)), which tells a wrong batch time apart from a policy
that behaves differently live. Triton's batcher is not simulated: the simulator's `triton`
baseline waits a duty cycle, the benchmark's Triton l(b)/2.

`--parts simulated` alone replays a finished run's results.json in `--out` (no fleet).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.router_setup import PlanSetup
from bench.router_types import SIM_TRACES, Results, Row, SimRow
from model_repo_tools.profiles import LatencyCurve
from router.types import DROP_MODES
from tnx.errors import UserInputError


def sim_row(
    measured: Row, trace: str, noise_cv: float, speed: float, runs: list[dict[str, Any]]
) -> SimRow:
    """A `SimRow` from `bench.simulate.run` summaries of one level (one per seed)."""
    seconds = sum(r["seconds"] for r in runs)
    sent = sum(r["sent"] for r in runs)
    in_slo = sum(r["in_slo"] for r in runs)
    late = sum(r["late"] for r in runs)
    dropped = sum(r["dropped"] for r in runs)
    if sent != in_slo + late + dropped:
        raise AssertionError(f"{measured.system} {measured.load:g}×: requests unaccounted for")
    return SimRow(
        system=measured.system,
        load=measured.load,
        trace=trace,
        offered_rps=measured.offered_rps,
        noise_cv=noise_cv,
        speed=speed,
        seeds=len(runs),
        sent=sent,
        in_slo=in_slo,
        late=late,
        dropped=dropped,
        goodput_rps=in_slo / seconds if seconds > 0 else 0.0,
        measured_in_slo=measured.in_slo / measured.sent if measured.sent else 0.0,
        measured_goodput_rps=measured.goodput_rps,
    )


def measured_speed(row: Row, curve: LatencyCurve) -> float | None:
    """The router's mean time a batch was in flight over the profile's l(mean batch)."""
    if row.batch_ms is None or not row.mean_batch:
        return None
    return row.batch_ms / curve.latency(row.mean_batch)


def simulated_part(
    rows: list[Row],
    conv: PlanSetup,
    out: Path,
    seconds: float,
    seeds: int,
    log: Callable[[str], None] = lambda _: None,
) -> list[SimRow]:
    """Per measured router row: one `SimRow` per trace of `SIM_TRACES` on the profile's batch
    times, and one `even` on the level's measured batch times where the row has them."""
    from bench.simulate import run
    from control.types import Plan
    from model_repo_tools.profiles import ProfileSet
    from router.simulator import planned

    plan = Plan.load(conv.plan)
    curves = ProfileSet.load(out / "profiles.json").curves()
    curve = curves[(conv.model, plan.gpus[0].gpu_type)]
    planned_rps = sum(planned(plan)[0].values())
    noise = conv.latency_cv.get(conv.batch, 0.0)
    found: list[SimRow] = []
    for m in rows:
        if m.system not in DROP_MODES or m.sent == 0:  # the router's systems, not Triton's
            continue
        variants = [(t, 1.0) for t in SIM_TRACES]
        speed = measured_speed(m, curve)
        if speed is not None:
            variants.append(("even", speed))
        for trace, sp in variants:
            runs = [
                run(
                    plan,
                    curves,
                    drop=m.system,
                    trace=trace,
                    seconds=seconds,
                    load=m.offered_rps / planned_rps,
                    seed=seed,
                    noise_cv=noise,
                    speed=sp,
                )
                for seed in range(seeds)
            ]
            row = sim_row(m, trace, noise, sp, runs)
            found.append(row)
            log(
                f"simulated {m.system} {m.load:g}× {row.variant}: {row.goodput_rps:.1f} req/s "
                f"(measured {m.goodput_rps:.1f})"
            )
    return found


def load_measured(out: Path) -> tuple[dict[str, Any], Results, float]:
    """A finished run's results.json: its raw data, the measured part of its results (plan
    setup, goodput rows) and its seconds per level."""
    path = out / "results.json"
    try:
        data = json.loads(path.read_text())
        conv = data["convnet"]
        goodput = [Row(**r) for r in data["goodput"]]
        seconds = float(data["config"]["duration_s"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"{path}: no goodput run to replay ({err})") from None
    if conv is None or not goodput:
        raise UserInputError(f"{path}: no goodput run to replay")
    for k in ("latency_ms", "latency_cv"):
        conv[k] = {int(b): v for b, v in conv.get(k, {}).items()}
    res = Results(data.get("command", ""), convnet=PlanSetup(**conv), goodput=goodput)
    return data, res, seconds
