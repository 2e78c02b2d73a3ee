"""bench/ may import every package; no product package imports it at module level (the CLI
root mounts its commands with a lazy, guarded import inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("tnx", "exporters", "model_repo_tools", "control", "router", "deploy")


def _module_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_product_package_imports_bench_at_module_level() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in _module_level_imports(path)
        if name == "bench" or name.startswith("bench.")
    ]
    assert not offenders
