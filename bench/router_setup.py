"""The stage of `tnx bench router`: models, repository, measured l(b), plans, router processes.

Two example models share one fleet: `convnet64` (CPU-heavy; its planned capacity C is what the
goodput and recovery parts load in multiples of) and `tiny_mlp` (next to no compute; the
latency, max-rate and perf_analyzer parts use it to see what the router itself adds). Each
gets a hand-written one-session plan from l(b) measured on the fleet: batch b, duty cycle
headroom · l(b) per server, so the plan is what the scheduler would give one session.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.open_loop import Body
from deploy.services import Service, spawn
from model_repo_tools.fleet import Fleet
from tnx.errors import UserInputError

CONVNET = "convnet64"
TINY = "tiny_mlp"
# Triton's dynamic batcher serves the convnet baseline from its own copy of the model.
CONVNET_BATCHER = f"{CONVNET}_dynbatch"
TINY_BATCH = 32  # far above what a 50 ms SLO needs at 3000 req/s over 2 servers


@dataclass(slots=True)
class PlanSetup:
    """One model's measured l(b) and the one-session plan made from it."""

    model: str
    latency_ms: dict[int, float]
    batch: int
    slo_ms: float
    duty_cycle_ms: float
    capacity_rps: float  # planned: batch per duty cycle, summed over the plan's servers
    plan: str  # path of plan.json
    latency_cv: dict[int, float] = field(default_factory=dict)  # of l(b)'s timings, per b


@dataclass(slots=True)
class TritonBatcher:
    """The dynamic batcher settings that Triton reached directly runs with (convnet)."""

    delay_us: int
    max_queue: int


def export_models(models: list[str], out: Path) -> dict[str, Path]:
    from exporters.examples import EXAMPLES, INPUT_SHAPES
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx

    paths = {}
    for m in models:
        if m not in EXAMPLES:
            raise UserInputError(f"model {m!r}: not one of {', '.join(EXAMPLES)}")
        paths[m] = export_onnx(
            load_factory(EXAMPLES[m]), INPUT_SHAPES[m], out / "models" / f"{m}.onnx"
        )
    return paths


def build_repo(onnx: dict[str, Path], repo: Path) -> Path:
    """Python-backend repository; tiny_mlp with Triton's batcher on (no delay: it only batches
    what is already queued), which both the router's batches and direct requests go through."""
    from model_repo_tools.repository import add_model

    if CONVNET in onnx:
        add_model(onnx[CONVNET], repo, backend="python", max_batch=64)
        add_model(onnx[CONVNET], repo, backend="python", max_batch=64, name=CONVNET_BATCHER)
    if TINY in onnx:
        add_model(onnx[TINY], repo, backend="python", max_batch=64, dynamic_batching=True)
    return repo


def binary_request(x: np.ndarray, binary_output: bool = True) -> tuple[bytes, int]:
    """A KServe v2 request body for `x` as the FP32 input `input`, as tritonclient.http sends
    it (binary tensor data): the body and the length of its JSON header."""
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    outs = [httpclient.InferRequestedOutput("output", binary_data=True)] if binary_output else []
    body, json_size = httpclient.InferenceServerClient.generate_request_body([inp], outs)
    return body, int(json_size or 0)


def write_body(model: str, path: Path) -> Body:
    """One sample as tritonclient.http sends it: binary input, binary output requested."""
    from exporters.examples import INPUT_SHAPES

    x = np.random.default_rng(0).standard_normal((1, *INPUT_SHAPES[model]), dtype=np.float32)
    body, json_size = binary_request(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return Body(path, json_size)


def measure_latency(
    fleet: Fleet,
    model: str,
    batches: list[int],
    reps: int = 7,
    shape: tuple[int, ...] | None = None,
) -> dict[int, float]:
    """Median batch latency (gRPC round trip), all servers at once: on this machine they share
    the cores, so a server's batch time alone would overstate what the fleet can do. One
    input, `input`, of `shape` per sample (default: the example model's)."""
    return medians(measure_latency_samples(fleet, model, batches, reps, shape))


def medians(times: dict[int, list[float]]) -> dict[int, float]:
    """Each batch size's median timing."""
    return {b: statistics.median(v) for b, v in times.items()}


def latency_cv(times: dict[int, list[float]]) -> dict[int, float]:
    """Coefficient of variation of each batch size's measured times (0 with fewer than 2)."""
    return {
        b: statistics.stdev(v) / statistics.fmean(v) if len(v) > 1 else 0.0
        for b, v in times.items()
    }


def measure_latency_samples(
    fleet: Fleet,
    model: str,
    batches: list[int],
    reps: int = 7,
    shape: tuple[int, ...] | None = None,
) -> dict[int, list[float]]:
    """`measure_latency`'s every timing (ms): `reps` per batch size and server."""
    from exporters.examples import INPUT_SHAPES
    from model_repo_tools.triton_client import TritonServer

    sample = shape if shape is not None else INPUT_SHAPES[model]

    times: dict[int, list[float]] = {b: [] for b in batches}
    lock = threading.Lock()

    def run(address: str) -> None:
        rng = np.random.default_rng(1)
        with TritonServer(address) as s:
            for b in batches:
                x = rng.standard_normal((b, *sample), dtype=np.float32)
                s.infer(model, {"input": x})  # warm-up
                for _ in range(reps):
                    t0 = time.perf_counter()
                    s.infer(model, {"input": x})
                    with lock:
                        times[b].append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=run, args=(g.server,)) for g in fleet.gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def write_profiles(setups: list[tuple[str, dict[int, float]]], fleet: Fleet, path: Path) -> None:
    gpu_type = fleet.gpus[0].gpu_type
    profiles = [
        {
            "model": model,
            "gpu_type": gpu_type,
            "batches": [{"batch": b, "latency_ms": round(ms, 3)} for b, ms in lat.items()],
        }
        for model, lat in setups
    ]
    path.write_text(json.dumps({"version": 1, "profiles": profiles}, indent=1))


def write_plan(
    fleet: Fleet,
    model: str,
    lat: dict[int, float],
    batch: int,
    slo_ms: float,
    headroom: float,
    path: Path,
    gpus: int | None = None,
) -> PlanSetup:
    """One session of `model` on the first `gpus` servers (all by default)."""
    lb = lat[batch]
    duty = headroom * lb
    if duty + lb > slo_ms:
        raise UserInputError(
            f"{model}: l({batch}) = {lb:.1f} ms leaves no valid plan within {slo_ms:g} ms"
        )
    per_gpu = 1000.0 * batch / duty
    servers = fleet.gpus[: gpus or len(fleet.gpus)]
    plan = {
        "version": 1,
        "gpus": [
            {
                "gpu": g.id,
                "gpu_type": g.gpu_type,
                "duty_cycle_ms": round(duty, 3),
                "allocations": [
                    {
                        "session": model,
                        "model": model,
                        "batch": batch,
                        "rate": round(per_gpu, 3),
                        "slo_ms": round(slo_ms, 3),
                    }
                ],
            }
            for g in servers
        ],
        "unplaced": [],
    }
    path.write_text(json.dumps(plan, indent=1))
    return PlanSetup(model, lat, batch, slo_ms, duty, per_gpu * len(servers), str(path))


def batcher_settings(setup: PlanSetup, servers: int) -> TritonBatcher:
    # Wait at most half a batch time to fill a batch; reject a request that a full SLO's
    # worth of planned work is already queued ahead of.
    per_gpu = setup.capacity_rps / servers
    return TritonBatcher(
        delay_us=int(setup.latency_ms[setup.batch] * 500),
        max_queue=math.ceil(per_gpu * setup.slo_ms / 1000.0),
    )


def triton_override(repo: Path, model: str, setup: PlanSetup, tb: TritonBatcher) -> str:
    from model_repo_tools.config import parse_pbtxt, to_override_json

    cfg = parse_pbtxt(repo / model / "config.pbtxt")
    cfg.max_batch_size = setup.batch
    db = cfg.dynamic_batching
    db.max_queue_delay_microseconds = tb.delay_us
    db.preferred_batch_size[:] = [setup.batch]
    qp = db.default_queue_policy
    qp.timeout_action = qp.REJECT
    qp.default_timeout_microseconds = int(setup.slo_ms * 1000)
    qp.allow_timeout_override = True
    qp.max_queue_size = tb.max_queue
    return to_override_json(cfg)


def start_router(out: Path, plan: str, drop: str, name: str) -> Service:
    from deploy.fleet import free_port

    args = [
        "router",
        "serve",
        "--plan",
        plan,
        "--fleet",
        str(out / "fleet.json"),
        "--profiles",
        str(out / "profiles.json"),
        "--drop",
        drop,
    ]
    return spawn(f"router {name}", args, free_port(), "/v2/health/ready", out / f"{name}.log")
