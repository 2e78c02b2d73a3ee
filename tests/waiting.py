"""Waiting in async tests on real time: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(check: Callable[[], bool], timeout_s: float) -> None:
    """Return once `check()` holds; fail the test if it does not within `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, f"not within {timeout_s:g} s"
        await asyncio.sleep(0.02)
