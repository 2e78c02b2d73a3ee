"""The main job on the embedded default (placeholder until the end-to-end demo)."""

from __future__ import annotations


def demo() -> None:
    raise NotImplementedError
