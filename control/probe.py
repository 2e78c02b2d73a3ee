"""Probing Triton servers' health: `GET /v2/health/live` (KServe v2), over HTTP or gRPC.

A server is healthy when it answers live within the timeout; a refused
connection, a timeout (a SIGSTOPped or wedged server) or any other answer is a
failure with a one-line reason. Liveness, not readiness: with strict readiness
(Triton's default) a server answers not-ready while one of its models is
unavailable, e.g. during the actuator's own loads, and a server is plannable as
long as it answers at all (what a plan needs loaded there, the actuator loads).
The HTTP endpoint is used where the fleet names it (no channel state to go
stale); else gRPC's ServerLive.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from model_repo_tools.fleet import FleetGpu


class Prober:
    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._grpc: dict[str, Any] = {}

    async def close(self) -> None:
        await self._http.aclose()
        for client in self._grpc.values():
            await client.close()
        self._grpc.clear()

    async def live(self, gpu: FleetGpu) -> tuple[bool, str]:
        """(healthy, why not) for the server holding `gpu`."""
        try:
            if gpu.http:
                r = await self._http.get(f"http://{gpu.http}/v2/health/live")
                if r.status_code == 200:
                    return True, ""
                return False, f"{gpu.http}: /v2/health/live answered HTTP {r.status_code}"
            return await asyncio.wait_for(self._grpc_live(gpu.server), self.timeout_s)
        except httpx.TimeoutException:
            return False, f"{gpu.http}: no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as err:
            return False, f"{gpu.http}: {type(err).__name__}: {err}".rstrip(": ")
        except TimeoutError:
            return False, f"{gpu.server}: no answer within {self.timeout_s:g} s"

    async def _grpc_live(self, server: str) -> tuple[bool, str]:
        import tritonclient.grpc.aio as grpcaio
        from tritonclient.utils import InferenceServerException

        client = self._grpc.get(server)
        if client is None:
            client = self._grpc[server] = grpcaio.InferenceServerClient(server)
        try:
            if await client.is_server_live(client_timeout=self.timeout_s):
                return True, ""
            return False, f"{server}: not live"
        except InferenceServerException as err:
            msg = (err.message() or str(err)).strip().splitlines()
            return False, f"{server}: {msg[0] if msg else 'unreachable'}"
