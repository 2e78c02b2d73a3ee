"""The names of a prefix group's models in a repository, which carry its structure.

The shared prefix is `prefix_<12 hex digits of its nodes' hashes>`; the suffix of model M
is `<prefix>__M`; M itself is an ensemble of the two (`model_repo_tools.shared_prefix`).
So every reader of a repository or of profiles (the planner, the validator, the router)
sees the groups from the model names alone, with no file beside them.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "prefix_"
SEP = "__"


def suffix_name(prefix: str, model: str) -> str:
    return f"{prefix}{SEP}{model}"


def parts(models: Iterable[str]) -> dict[str, tuple[str, str]]:
    """model → (prefix, suffix), for each model M with both `<P>__M` and `<P>` in `models`."""
    names = set(models)
    out: dict[str, tuple[str, str]] = {}
    for name in names:
        if not name.startswith(PREFIX) or SEP not in name:
            continue
        prefix, _, model = name.partition(SEP)
        if prefix in names and model in names:
            out[model] = (prefix, name)
    return out
