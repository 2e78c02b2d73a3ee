"""Validation of a Triton model repository: every config parses, its files exist, its I/O matches ONNX."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from model_repo_tools.config import MODEL_FILES, ONNX_FILE, dtype_name, parse_pbtxt
from model_repo_tools.onnx_io import read_io
from tnx.errors import RepositoryError


@dataclass(frozen=True, slots=True)
class Problem:
    model: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}: {self.message}"


def _backend(cfg: mc.ModelConfig) -> str | None:
    if cfg.backend == "python":
        return "python"
    if cfg.platform == "onnxruntime_onnx" or cfg.backend == "onnxruntime":
        return "onnxruntime"
    if cfg.platform == "tensorrt_plan" or cfg.backend == "tensorrt":
        return "tensorrt"
    return None


def _versions(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _compare_io(name: str, kind: str, declared, actual, batched: bool) -> list[Problem]:
    problems = []
    by_name = {t.name: t for t in actual}
    for d in declared:
        t = by_name.get(d.name)
        if t is None:
            problems.append(
                Problem(
                    name, f"{kind} {d.name!r} is not in the ONNX model (it has {sorted(by_name)})"
                )
            )
            continue
        if dtype_name(d.data_type) != t.data_type:
            problems.append(
                Problem(
                    name,
                    f"{kind} {d.name!r}: data_type {dtype_name(d.data_type)} "
                    f"but the ONNX model has {t.data_type}",
                )
            )
        want = t.dims[1:] if batched else t.dims
        dims = tuple(d.dims)
        if len(dims) != len(want) or any(
            a != b and b != -1 and a != -1 for a, b in zip(dims, want, strict=False)
        ):
            problems.append(
                Problem(
                    name,
                    f"{kind} {d.name!r}: dims {list(dims)} but the ONNX model "
                    f"has {list(want)}" + (" after the batch axis" if batched else ""),
                )
            )
    return problems


def check_model(folder: Path) -> list[Problem]:
    name = folder.name
    cfg_path = folder / "config.pbtxt"
    if not cfg_path.is_file():
        return [Problem(name, "no config.pbtxt")]
    try:
        cfg = parse_pbtxt(cfg_path)
    except RepositoryError as err:
        return [Problem(name, str(err))]
    problems = []
    if cfg.name and cfg.name != name:
        problems.append(Problem(name, f"config name {cfg.name!r} differs from its folder {name!r}"))
    if cfg.platform == "ensemble":
        from model_repo_tools.check_ensemble import check_ensemble

        return problems + [Problem(name, m) for m in check_ensemble(folder, cfg)]
    backend = _backend(cfg)
    if backend is None:
        return problems + [
            Problem(name, f"unknown backend/platform {cfg.backend or cfg.platform!r}")
        ]
    if cfg.max_batch_size < 0:
        problems.append(Problem(name, f"max_batch_size {cfg.max_batch_size} is negative"))
    if not cfg.input:
        problems.append(Problem(name, "config declares no input"))
    versions = _versions(folder)
    if not versions:
        return problems + [Problem(name, "no version folder (e.g. 1/)")]
    for vdir in versions:
        wanted = [MODEL_FILES[backend]] + ([ONNX_FILE] if backend == "python" else [])
        if backend == "python" and "onnx_file" in cfg.parameters:
            wanted[1] = cfg.parameters["onnx_file"].string_value or ONNX_FILE
        if cfg.default_model_filename and backend != "python":
            wanted[0] = cfg.default_model_filename
        missing = [f for f in wanted if not (vdir / f).is_file()]
        for f in missing:
            problems.append(Problem(name, f"version {vdir.name}: missing {f}"))
        onnx_file = vdir / (wanted[1] if backend == "python" else wanted[0])
        if backend in ("python", "onnxruntime") and onnx_file.is_file():
            try:
                inputs, outputs = read_io(onnx_file)
            except RepositoryError as err:
                problems.append(Problem(name, str(err)))
                continue
            batched = cfg.max_batch_size > 0
            problems += _compare_io(name, "input", cfg.input, inputs, batched)
            problems += _compare_io(name, "output", cfg.output, outputs, batched)
    return problems


def check_repository(repo: Path) -> list[Problem]:
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"{repo}: not a directory")
    problems: list[Problem] = []
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        problems += check_model(folder)
    return problems
