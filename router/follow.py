"""A router following the control plane: poll `GET /v1/plan`, switch when it changes.

The poll names the router (`?router=<its URL>`): that is its registration and
heartbeat, and the plan it gets back names each GPU's owner (`router.ownership`).
A new revision, or owners that moved (a router joined or died), is a switch. The
switch goes through the policy's `switch_plan`, which keeps every queued
request (re-homed to its session's new GPUs, or answered with a reason), so a
plan change neither drops nor duplicates requests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

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


def plan_url(control: str, advertise: str | None) -> str:
    """`GET /v1/plan` of `control`, naming the router known as `advertise` (if any)."""
    url = f"{control.rstrip('/')}/v1/plan"
    return url if advertise is None else f"{url}?router={quote(advertise, safe='')}"


def owners_of(body: dict[str, Any]) -> dict[str, str | None]:
    return {g["gpu"]: g.get("owner") for g in body.get("gpus", [])}


async def initial_state(
    control: str, wait_s: float = 60.0, advertise: str | None = None
) -> tuple[Plan, int, Fleet, ProfileSet]:
    """Plan (with revision), fleet and profiles from the control plane, waiting for its first plan."""
    control = control.rstrip("/")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                body = await fetch(client, plan_url(control, advertise))
                fleet = Fleet.model_validate(await fetch(client, f"{control}/v1/fleet"))
                profiles = ProfileSet.model_validate(await fetch(client, f"{control}/v1/profiles"))
                return Plan.model_validate(body), int(body.get("revision", 0)), fleet, profiles
            except ServerError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)


async def follow(service: Any, control: str, interval_s: float = 0.5) -> None:
    """Run forever: adopt each new plan revision, or new owners, the control plane publishes."""
    control = control.rstrip("/")
    url = plan_url(control, service.advertise)
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            await asyncio.sleep(interval_s)
            try:
                body = await fetch(client, url)
                revision = int(body.get("revision", 0))
                if revision == service.revision and owners_of(body) == service.share.owners:
                    continue
                fleet = Fleet.model_validate(await fetch(client, f"{control}/v1/fleet"))
                service.switch_plan(Plan.model_validate(body), fleet, revision=revision)
                log.info("switched to plan revision %d (owners %s)", revision, owners_of(body))
            except (TnxError, ValueError) as err:
                log.warning("following %s: %s", control, err)
