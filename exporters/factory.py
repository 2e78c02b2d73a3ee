"""Resolving a model factory, `path/to/file.py:function` or `package.module:function`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from tnx.errors import FactoryError


def load_factory(spec: str) -> Any:
    """Import the factory named by `spec` and call it; return the torch.nn.Module it builds."""
    target, sep, func_name = spec.rpartition(":")
    if not sep or not target or not func_name:
        raise FactoryError(f"factory {spec!r}: expected 'file.py:function' or 'module:function'")
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target)
            if not path.is_file():
                raise FactoryError(f"factory {spec!r}: no such file {path}")
            mod_name = f"_tnx_factory_{abs(hash(path.resolve()))}"
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise FactoryError(f"factory {spec!r}: cannot import {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except FactoryError:
        raise
    except Exception as err:  # a user's module can raise anything while importing
        raise FactoryError(
            f"factory {spec!r}: import failed: {type(err).__name__}: {err}"
        ) from None
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        raise FactoryError(f"factory {spec!r}: {target} has no callable {func_name!r}")
    try:
        model = func()
    except Exception as err:
        raise FactoryError(
            f"factory {spec!r}: calling it failed: {type(err).__name__}: {err}"
        ) from None
    import torch

    if not isinstance(model, torch.nn.Module):
        raise FactoryError(
            f"factory {spec!r}: returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model.eval()


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' → (3, 224, 224): the per-sample shape, without the batch axis."""
    try:
        dims = tuple(int(d) for d in text.lower().replace(",", "x").split("x") if d.strip())
    except ValueError:
        raise FactoryError(f"--input-shape {text!r}: expected dimensions like 3x224x224") from None
    if not dims or any(d < 1 for d in dims):
        raise FactoryError(f"--input-shape {text!r}: expected positive dimensions like 3x224x224")
    return dims
