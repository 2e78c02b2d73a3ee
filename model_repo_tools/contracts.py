"""Loading and writing the JSON contract files, with one-line errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from tnx.errors import ContractError

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"field {loc}: {first['msg']}{more}"


def load_contract(path: str | Path, model: type[M]) -> M:
    """Read `path` as JSON into `model`; any problem is a ContractError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ContractError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ContractError(f"{path}: not JSON: {err.msg} at line {err.lineno}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ContractError(f"{path}: {describe_validation_error(err)}") from None


def write_contract(path: str | Path, obj: BaseModel) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(obj.model_dump_json(indent=1, exclude_none=True) + "\n")
    tmp.replace(path)
