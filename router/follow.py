"""A router following the control plane: poll `GET /v1/plan`, switch when the revision changes.

The switch goes through the policy's `switch_plan`, which keeps every queued
request (re-homed to its session's new GPUs, or answered with a reason), so a
plan change neither drops nor duplicates requests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from control.types import Plan
from model_repo_tools.fleet import Fleet
from model_repo_tools.profiles import ProfileSet
from tnx.errors import ServerError, TnxError

log = logging.getLogger(__name__)


async def fetch(client: httpx.AsyncClient, url: str) -> Any:
    try:
        r = await client.get(url)
    except httpx.HTTPError as err:
        raise ServerError(f"control plane {url}: {err}") from None
    if r.status_code != 200:
        raise ServerError(f"control plane {url}: HTTP {r.status_code}: {r.text[:200]}")
    return r.json()


async def initial_state(control: str, wait_s: float = 60.0) -> tuple[Plan, int, Fleet, ProfileSet]:
    """Plan (with revision), fleet and profiles from the control plane, waiting for its first plan."""
    control = control.rstrip("/")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                body = await fetch(client, f"{control}/v1/plan")
                fleet = Fleet.model_validate(await fetch(client, f"{control}/v1/fleet"))
                profiles = ProfileSet.model_validate(await fetch(client, f"{control}/v1/profiles"))
                return Plan.model_validate(body), int(body.get("revision", 0)), fleet, profiles
            except ServerError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)


async def follow(service: Any, control: str, interval_s: float = 0.5) -> None:
    """Run forever: adopt each new plan revision the control plane publishes."""
    control = control.rstrip("/")
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            await asyncio.sleep(interval_s)
            try:
                body = await fetch(client, f"{control}/v1/plan")
                revision = int(body.get("revision", 0))
                if revision == service.revision:
                    continue
                fleet = Fleet.model_validate(await fetch(client, f"{control}/v1/fleet"))
                service.switch_plan(Plan.model_validate(body), fleet, revision=revision)
                log.info("switched to plan revision %d", revision)
            except (TnxError, ValueError) as err:
                log.warning("following %s: %s", control, err)
