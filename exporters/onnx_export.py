"""torch → ONNX with a symbolic batch axis (torch.export / dynamo exporter).

Exporting with an example batch of 2 keeps the exporter from specialising the
batch axis to 1. Weights are embedded (external_data=False) so the .onnx file
alone is the model that a repository or `load_model(files=…)` carries.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from tnx.errors import FactoryError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
MAX_BATCH = 1024


def _forward_arg(model: Any) -> str:
    params = [
        p
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params:
        raise FactoryError(f"{type(model).__name__}.forward takes no tensor argument")
    return params[0].name


def export_onnx(
    model: Any,
    sample_shape: tuple[int, ...],
    out: Path,
    example_batch: int = 2,
    max_batch: int = MAX_BATCH,
) -> Path:
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(max(2, example_batch), *sample_shape)
    with torch.no_grad():
        try:
            sample_out = model(example)
        except Exception as err:
            raise FactoryError(
                f"{type(model).__name__} fails on input {list(example.shape)}: {err}"
            ) from None
    outputs = sample_out if isinstance(sample_out, tuple | list) else (sample_out,)
    output_names = (
        [OUTPUT_NAME] if len(outputs) == 1 else [f"{OUTPUT_NAME}_{i}" for i in range(len(outputs))]
    )
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    quiet = io.StringIO()
    try:
        # The exporter is chatty (progress lines, deprecation warnings): keep stdout ours.
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            torch.onnx.export(
                model,
                (example,),
                str(out),
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_shapes={_forward_arg(model): {0: batch}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except FactoryError:
        raise
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FactoryError(f"ONNX export of {type(model).__name__} failed: {msg}") from None
    return out
