"""Values of command-line options: comma-separated lists and choices, checked alike by every
`tnx` sub-command. A value that does not fit is a `UserInputError` that names the option
and the value, which the CLI prints as its one line.

>>> numbers("--loads", "0.5, 1,2")
(0.5, 1.0, 2.0)
>>> names("early,lazy,")
('early', 'lazy')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from tnx.errors import UserInputError

N = TypeVar("N", int, float)


def names(text: str) -> tuple[str, ...]:
    """The comma-separated items of `text`, stripped, empty ones left out."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def numbers(option: str, text: str, parse: Callable[[str], N] = float) -> tuple[N, ...]:
    """The comma-separated numbers of `option`'s value `text`, in order, each read by `parse`
    (float, int); at least one, and every one positive."""
    try:
        values = tuple(parse(x) for x in names(text))
    except ValueError:
        raise UserInputError(f"{option} {text!r}: not a comma-separated list of numbers") from None
    if not values or min(values) <= 0:
        raise UserInputError(f"{option} {text!r}: need one or more positive numbers")
    return values


def one_of(option: str, value: str, choices: Iterable[str]) -> str:
    """`value`, if it is one of `choices`."""
    allowed = list(choices)
    if value not in allowed:
        raise UserInputError(f"{option} {value!r}: expected one of {', '.join(allowed)}")
    return value
