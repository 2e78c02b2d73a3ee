"""The JSON contract files of DESIGN.md (profiles, fleet, workload, plan): their common base,
loading and writing with one-line errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

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


class ContractFile(BaseModel):
    """A JSON contract file of DESIGN.md (profiles, fleet, workload, plan): unknown fields
    kept, read and written with one-line errors that name the file and field."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return load_contract(path, cls)

    def save(self, path: str | Path) -> None:
        write_contract(path, self)


def unique_ids(what: str) -> AfterValidator:
    """A list field's check that its items' `id`s are unique (the error names the least
    repeated one): `Annotated[list[X], unique_ids("gpu id")]`."""

    def check(items: list[Any]) -> list[Any]:
        seen: set[str] = set()
        dup: set[str] = set()
        for item in items:
            (dup if item.id in seen else seen).add(item.id)
        if dup:
            raise ValueError(f"duplicate {what} {min(dup)!r}")
        return items

    return AfterValidator(check)
