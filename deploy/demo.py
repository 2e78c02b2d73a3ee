"""`tnx demo` (make demo): the main job on the embedded default.

Export the example models, build a repository, start a 2-server local fleet,
load every model on every server, run inferences at several batch sizes and
print, per (model, server, batch), the latency and the largest difference from
torch. The fleet is stopped at the end, also on failure.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Working folder."),
    servers: int = typer.Option(2, "--servers"),
    batches: str = typer.Option("1,8,32", "--batches"),
) -> None:
    """Export the examples, serve them on a local fleet, infer, compare with torch."""
    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from deploy.fleet import start_fleet, stop_fleet
    from exporters.examples import EXAMPLES, INPUT_SHAPES
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx
    from exporters.verify import verify_onnx
    from model_repo_tools.repository import add_model
    from model_repo_tools.triton_client import TritonServer

    console = Console()
    sizes = [int(b) for b in batches.split(",")]
    repo = out / "repo"
    modules = {}
    for name, factory in EXAMPLES.items():
        with console.status(f"exporting {name}"):
            model = modules[name] = load_factory(factory)
            onnx = export_onnx(model, INPUT_SHAPES[name], out / "models" / f"{name}.onnx")
            checks = verify_onnx(model, onnx, INPUT_SHAPES[name], (1, 7))
            add_model(onnx, repo, backend="python", max_batch=max(sizes))
        worst = max(c.max_abs for c in checks)
        console.print(f"exported {name} → {onnx} (onnxruntime vs torch: max abs {worst:.1e})")
    with console.status(f"starting {servers} tritonserver processes"):
        fleet = start_fleet(servers, repo, out / "fleet")
    fleet.save(out / "fleet.json")
    console.print(f"fleet of {len(fleet.gpus)} ready ({out / 'fleet.json'})")
    table = Table(title="Triton answers vs torch")
    for col in ("model", "server", "batch", "latency ms", "max |triton − torch|"):
        table.add_column(col, justify="right" if col != "model" else "left")
    rng = np.random.default_rng(0)
    try:
        for gpu in fleet.gpus:
            with TritonServer(gpu.server) as server:
                for name, model in modules.items():
                    with console.status(f"loading {name} on {gpu.id}"):
                        server.load(name)
                    for b in sizes:
                        x = rng.standard_normal((b, *INPUT_SHAPES[name]), dtype=np.float32)
                        server.infer(name, {"input": x})  # warm-up
                        t0 = time.perf_counter()
                        y = server.infer(name, {"input": x})["output"]
                        ms = (time.perf_counter() - t0) * 1000
                        with torch.no_grad():
                            ref = model(torch.from_numpy(x)).numpy()
                        err = float(np.abs(y - ref).max())
                        table.add_row(name, gpu.id, str(b), f"{ms:.2f}", f"{err:.1e}")
    finally:
        with console.status("stopping the fleet"):
            stop_fleet(fleet, grace_s=5)
    console.print(table)
