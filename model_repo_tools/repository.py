"""Building a Triton model repository: `<repo>/<name>/config.pbtxt` and `<repo>/<name>/<version>/…`."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from model_repo_tools.config import ONNX_FILE, Backend, build_config, to_pbtxt
from model_repo_tools.onnx_io import read_io
from tnx.errors import RepositoryError

RUNNER = "onnx_python_model.py"


def runner_source() -> str:
    return resources.files("model_repo_tools.runners").joinpath(RUNNER).read_text()


def add_model(
    onnx_path: Path,
    repo: Path,
    backend: Backend = "python",
    max_batch: int = 64,
    name: str | None = None,
    version: int = 1,
    instance_kind: str = "auto",
    instance_count: int = 1,
    dynamic_batching: bool = False,
) -> Path:
    """Add the model in `onnx_path` to `repo`; returns the model's folder."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise RepositoryError(f"{onnx_path}: no such ONNX file")
    if max_batch < 0:
        raise RepositoryError(f"--max-batch {max_batch}: must be 0 (no batching) or more")
    name = name or onnx_path.stem
    inputs, outputs = read_io(onnx_path)
    if max_batch > 0:
        for t in inputs + outputs:
            if not t.dims or t.dims[0] not in (-1,):
                raise RepositoryError(
                    f"{onnx_path}: tensor {t.name!r} has no dynamic batch axis (shape {list(t.dims)});"
                    " export with a dynamic batch or use --max-batch 0"
                )
    if instance_kind == "auto":
        instance_kind = "cpu" if backend == "python" else "gpu"
    cfg = build_config(
        name,
        backend,
        inputs,
        outputs,
        max_batch,
        instance_kind=instance_kind,
        instance_count=instance_count,
        dynamic_batching=dynamic_batching,
    )
    folder = Path(repo) / name
    vdir = folder / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    if backend == "tensorrt":
        plan = onnx_path.with_suffix(".plan")
        if not plan.is_file():
            raise RepositoryError(
                f"{plan}: no TensorRT plan beside the ONNX file (tnx export --tensorrt)"
            )
        shutil.copyfile(plan, vdir / "model.plan")
    else:
        shutil.copyfile(onnx_path, vdir / ONNX_FILE)
        if backend == "python":
            (vdir / "model.py").write_text(runner_source())
    (folder / "config.pbtxt").write_text(to_pbtxt(cfg))
    return folder
