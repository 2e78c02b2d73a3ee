"""The GPU check of issue 14: the serving path's answers and profiles against torch's own.

`python -m bench.gpu_check answers …` loads each model on the fleet's first GPU the way
the control plane does (`Actuator.override`: one instance on the GPU, KIND_GPU), sends a
batch through Triton and compares the answer with the torch model's on the same device;
it also reads which onnxruntime providers the runner logged. `python -m bench.gpu_check
timings …` times the torch models at the profiled batch sizes and sets `tnx profile`'s
rows beside them: a row agrees when it is within 30 % of torch's time plus the serving
overhead, measured as `tiny_mlp`'s profiled batch-1 latency less its torch time (a model
with next to no compute: what is left is Triton, the Python stub and gRPC).

`bench/gpu.sh` runs both around `tnx export`, `tnx fleet up`, `tnx profile`, `tnx plan`
and `tnx bench router`; on a machine without a GPU the same steps run on the CPU.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from tnx.errors import UserInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

TOLERANCE = 1e-3  # fp32, the bound on the GPU path against torch
AGREEMENT = 0.30  # a profile row within ±30 % of torch + overhead
OVERHEAD_MODEL = "tiny_mlp"
MODELS = typer.Option(..., "--model", help="NAME=FACTORY@SHAPE, once per model.")


def _factories(specs: list[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """`name=factory@3x224x224` → name → (factory, sample shape)."""
    from exporters.factory import parse_shape

    out = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        factory, at, shape = rest.partition("@")
        if not (sep and at and name and factory):
            raise UserInputError(f"--model {spec!r}: expected NAME=FACTORY@SHAPE")
        out[name] = (factory, parse_shape(shape))
    return out


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_model(factory: str, device: str) -> Any:
    from exporters.factory import load_factory

    return load_factory(factory).to(device).eval()


@app.command()
def answers(
    fleet: Path = typer.Option(..., help="fleet.json of the running servers."),
    repo: Path = typer.Option(..., help="The model repository the fleet serves."),
    model: list[str] = MODELS,
    batch: int = typer.Option(4, help="Samples per checked request."),
    out: Path = typer.Option(..., help="answers.json to write."),
) -> None:
    """Load each model on the first GPU as the control plane would; compare with torch."""
    import torch

    from control.actuator import Actuator
    from model_repo_tools.fleet import Fleet
    from model_repo_tools.triton_client import TritonServer

    the_fleet = Fleet.model_validate_json(fleet.read_text())
    gpu = the_fleet.gpus[0]
    actuator = Actuator(the_fleet, repo)
    device = _device()
    rows = []
    rng = np.random.default_rng(0)
    with TritonServer(gpu.server) as server:
        for name, (factory, shape) in _factories(model).items():
            server.load(name, config_json=actuator.override(name, gpu, max(batch, 32)))
            x = rng.standard_normal((batch, *shape), dtype=np.float32)
            got = next(iter(server.infer(name, {"input": x}).values()))
            with torch.no_grad():
                want = _torch_model(factory, device)(torch.from_numpy(x).to(device)).cpu().numpy()
            err = float(np.max(np.abs(got - want)))
            rows.append({"model": name, "max_abs_err": err, "ok": err <= TOLERANCE})
    logged = _runner_lines(gpu.log)
    for row in rows:
        row["runner"] = next((line for line in logged if f": {row['model']} " in line), None)
    report = {"gpu": gpu.id, "gpu_type": gpu.gpu_type, "torch_device": device, "models": rows}
    out.write_text(json.dumps(report, indent=2))
    for row in rows:
        mark = "ok" if row["ok"] else f"OFF (> {TOLERANCE})"
        typer.echo(f"{row['model']}: max |triton - torch| = {row['max_abs_err']:.2e} {mark}")
        typer.echo(f"  {row['runner'] or 'no runner line in the server log'}")
    if not all(r["ok"] for r in rows):
        raise typer.Exit(1)


def _runner_lines(log: str | None) -> list[str]:
    if not log or not Path(log).is_file():
        return []
    lines = Path(log).read_text(errors="replace").splitlines()
    return [line.split('"', 1)[-1].rstrip('"') for line in lines if "tnx runner:" in line]


def torch_time_ms(net: Any, shape: tuple[int, ...], batch: int, device: str, n: int) -> float:
    """Median wall time of one forward pass of `batch` samples (after warm-up)."""
    import torch

    if device == "cpu":
        torch.set_num_threads(1)  # as the runner's onnxruntime session (intra_op_threads 1)
    x = torch.randn(batch, *shape, device=device)
    times = []
    warm = 5  # the first passes of a shape pay for kernel selection and allocation
    with torch.inference_mode():
        for i in range(n + warm):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= warm:
                times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def compare_rows(
    profiled: dict[str, dict[int, float]], torch_ms: dict[str, dict[int, float]]
) -> tuple[float, list[dict[str, Any]]]:
    """Pure: the serving overhead and, per (model, batch), profile against torch + overhead."""
    if OVERHEAD_MODEL not in profiled or 1 not in profiled[OVERHEAD_MODEL]:
        raise UserInputError(f"the profiles need {OVERHEAD_MODEL} at batch 1 (the overhead probe)")
    overhead = max(0.0, profiled[OVERHEAD_MODEL][1] - torch_ms[OVERHEAD_MODEL][1])
    rows = []
    for model, by_batch in profiled.items():
        for b, prof in sorted(by_batch.items()):
            if b not in torch_ms.get(model, {}):
                continue
            expected = torch_ms[model][b] + overhead
            ratio = prof / expected
            rows.append(
                {
                    "model": model,
                    "batch": b,
                    "profile_ms": prof,
                    "torch_ms": torch_ms[model][b],
                    "ratio": ratio,
                    "ok": abs(ratio - 1.0) <= AGREEMENT,
                }
            )
    return overhead, rows


@app.command()
def timings(
    model: list[str] = MODELS,
    repeats: int = typer.Option(20, help="Timed passes per batch."),
    profiles: Path = typer.Option(..., help="profiles.json from tnx profile."),
    out: Path = typer.Option(..., help="timings.json to write (and a .md table beside it)."),
) -> None:
    """Torch's own time per profiled batch beside tnx profile's rows."""
    from model_repo_tools.profiles import ProfileSet

    ps = ProfileSet.model_validate_json(profiles.read_text())
    device = _device()
    factories = _factories(model)
    profiled = {
        p.model: {q.batch: q.latency_ms for q in p.batches}
        for p in ps.profiles
        if p.model in factories
    }
    torch_ms: dict[str, dict[int, float]] = {}
    for name, (factory, shape) in factories.items():
        net = _torch_model(factory, device)
        torch_ms[name] = {
            b: torch_time_ms(net, shape, b, device, repeats) for b in profiled.get(name, {})
        }
    overhead, rows = compare_rows(profiled, torch_ms)
    out.write_text(json.dumps({"device": device, "overhead_ms": overhead, "rows": rows}, indent=2))
    table = [
        f"torch on {device}; serving overhead {overhead:.2f} ms ({OVERHEAD_MODEL} at batch 1)",
        "",
        "| model | batch | tnx profile (ms) | torch (ms) | profile / (torch + overhead) |",
        "|---|---|---|---|---|",
    ]
    table += [
        f"| {r['model']} | {r['batch']} | {r['profile_ms']:.2f} | {r['torch_ms']:.2f} | "
        f"{r['ratio']:.2f}{'' if r['ok'] else ' (off)'} |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(table) + "\n")
    typer.echo("\n".join(table))


if __name__ == "__main__":
    app()
