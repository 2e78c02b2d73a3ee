"""`tnx prefix scan A.onnx B.onnx …`: the models' shared prefixes (exporters.prefix)."""

from __future__ import annotations

from pathlib import Path

import typer

prefix_app = typer.Typer(no_args_is_help=True)


@prefix_app.command("scan")
def scan(models: list[Path] = typer.Argument(..., help="ONNX files to compare.")) -> None:
    """Group the models by shared prefix: the cut tensors, and the bytes and FLOPs shared."""
    from exporters.prefix import describe, groups, load_graph
    from tnx.errors import UserInputError

    for p in models:
        if not p.is_file():
            raise UserInputError(f"{p}: no such ONNX file")
    graphs = {g.name: g for g in (load_graph(p) for p in models)}
    found = groups(graphs.values())
    for group in sorted(found, key=lambda g: not g.shares):
        for line in describe(group, graphs):
            typer.echo(line)
    if not any(g.shares for g in found):
        typer.echo("no two models share a prefix")
