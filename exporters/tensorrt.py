"""ONNX → TensorRT plan with one optimisation profile over the batch range (TensorRT 10 API)."""

from __future__ import annotations

from pathlib import Path

from tnx.errors import MissingDependencyError, VerificationError


def tensorrt_missing() -> str | None:
    """Why a TensorRT build cannot run here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except ImportError:
        return "torch is not installed"
    return None


def build_plan(
    onnx_path: Path,
    out: Path,
    sample_shape: tuple[int, ...],
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 64,
    input_name: str = "input",
) -> Path:
    why = tensorrt_missing()
    if why:
        raise MissingDependencyError(f"--tensorrt: cannot build a TensorRT plan: {why}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise VerificationError(f"{onnx_path}: TensorRT cannot parse it: {errs}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape(
        input_name,
        (min_batch, *sample_shape),
        (opt_batch, *sample_shape),
        (max_batch, *sample_shape),
    )
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise VerificationError(f"{onnx_path}: TensorRT failed to build an engine")
    out = Path(out)
    out.write_bytes(bytes(engine))
    return out
