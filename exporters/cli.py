"""`tnx export FACTORY --input-shape 3x224x224 --name NAME --out DIR [--tensorrt]`."""

from __future__ import annotations

from pathlib import Path

import typer

from tnx.cli_args import numbers
from tnx.errors import VerificationError


def export(
    factory: str = typer.Argument(..., help="path/to/file.py:function or package.module:function"),
    input_shape: str = typer.Option(..., "--input-shape", help="Per-sample shape, e.g. 3x224x224."),
    name: str = typer.Option(..., "--name", help="Model name; writes DIR/NAME.onnx."),
    out: Path = typer.Option(Path("models"), "--out", help="Output folder."),
    verify_batches: str = typer.Option("1,2,7,32", "--verify-batches"),
    atol: float = typer.Option(1e-4, "--atol", help="Absolute tolerance against torch."),
    rtol: float = typer.Option(1e-3, "--rtol", help="Relative tolerance against torch."),
    max_batch: int = typer.Option(64, "--max-batch", help="Largest batch of the TensorRT profile."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build a TensorRT plan."),
) -> None:
    """Export a torch module to ONNX with a dynamic batch axis and verify it against torch."""
    from rich.console import Console

    from exporters.factory import load_factory, parse_shape
    from exporters.onnx_export import export_onnx
    from exporters.tensorrt import build_plan, tensorrt_missing
    from exporters.verify import verify_onnx

    console = Console(stderr=True)
    shape = parse_shape(input_shape)
    batches = numbers("--verify-batches", verify_batches, int)
    if tensorrt and (why := tensorrt_missing()):
        # Say so before minutes of export, not after.
        from tnx.errors import MissingDependencyError

        raise MissingDependencyError(f"--tensorrt: cannot build a TensorRT plan: {why}")
    with console.status(f"building {factory}"):
        model = load_factory(factory)
    onnx_path = out / f"{name}.onnx"
    with console.status(f"exporting {name} to {onnx_path}"):
        export_onnx(model, shape, onnx_path)
    with console.status(f"verifying {name} with onnxruntime at batches {list(batches)}"):
        checks = verify_onnx(model, onnx_path, shape, batches, atol=atol, rtol=rtol)
    typer.echo(
        f"{onnx_path}: verified against torch (tolerance |d| <= {atol:g} + {rtol:g}*|torch|)"
    )
    for c in checks:
        typer.echo(
            f"  batch {c.batch:4d}  max abs {c.max_abs:.3e}  max rel {c.max_rel:.3e}  "
            f"{'ok' if c.ok else 'FAIL'}"
        )
    bad = [c.batch for c in checks if not c.ok]
    if bad:
        raise VerificationError(f"{onnx_path}: exceeds tolerance against torch at batch {bad}")
    if tensorrt:
        plan = out / f"{name}.plan"
        with console.status(f"building TensorRT plan {plan}"):
            build_plan(onnx_path, plan, shape, max_batch=max_batch)
        typer.echo(f"{plan}: TensorRT plan, batch 1..{max_batch}")
