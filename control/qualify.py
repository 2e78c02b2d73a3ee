"""Whether a running Triton server qualifies for the fleet: the checks `tnx fleet attach`
and fleet discovery (`control.k8s_discovery`) both make.

tnx's deployment model is one Triton per GPU (one pod per GPU on Kubernetes): an
entry of fleet.json is one GPU and the one server that holds it, whose models the
control plane loads and unloads. A server qualifies when it answers over gRPC, is
live, takes model-repository loads and unloads (`--model-control-mode=explicit`),
and shows at most one GPU in its metrics; its GPU memory is the total its metrics
give (`nv_gpu_memory_total_bytes`), or `--gpu-memory` where they give none.

A server is named by its gRPC host:port (fleet.json's `server`); its HTTP and
metrics ports are looked for beside it, as Triton's defaults lay them out (HTTP
8000, gRPC 8001, metrics 8002), and recorded only where they answer.

`qualify` and `gpu_ids` are pure (what was read from a server in, a fleet entry or
the one-line reason out); `read_server` is the only I/O.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from model_repo_tools.fleet import FleetGpu
from tnx.errors import ServerError, UserInputError

# Triton's default ports sit in a row: HTTP 8000, gRPC 8001, metrics 8002.
HTTP_OFFSET, METRICS_OFFSET = -1, 1


@dataclass(frozen=True, slots=True)
class Address:
    host: str  # as given: a DNS name, an IPv4 address or a bracketed IPv6 one
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def beside(self, offset: int) -> str:
        return f"{self.host}:{self.port + offset}"


def parse_address(text: str) -> Address:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise UserInputError(f"server {text!r}: not a gRPC host:port (e.g. triton-0.triton:8001)")
    return Address(host, int(port))


@dataclass(frozen=True, slots=True)
class Reading:
    """What one server showed when it was asked."""

    server: str
    unreachable: str | None = None  # why it could not be asked, if it could not
    live: bool = False
    model_control: bool = False
    gpu_memory: tuple[int, ...] = ()  # total bytes of each GPU its metrics show (0: unread)
    http: str | None = None
    metrics: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """Why `server` does not qualify; printed as the CLI's one line about it."""

    server: str
    reason: str

    def __str__(self) -> str:
        return f"server {self.server}: {self.reason}"


def qualify(r: Reading, gpu_id: str, gpu_type: str, gpu_memory: int | None) -> FleetGpu | Problem:
    """The fleet entry for a server that qualifies, else what is wrong with it."""
    if r.unreachable is not None:
        return Problem(r.server, f"not reachable over gRPC ({r.unreachable})")
    if not r.live:
        return Problem(r.server, "not live (its health/live answers false)")
    if not r.model_control:
        return Problem(
            r.server,
            "not in explicit model-control mode: start it with --model-control-mode=explicit "
            "(tnx loads and unloads its models)",
        )
    if len(r.gpu_memory) > 1:
        return Problem(
            r.server,
            f"its metrics show {len(r.gpu_memory)} GPUs; tnx runs one Triton per GPU "
            "(give each server one, e.g. with NVIDIA_VISIBLE_DEVICES)",
        )
    total = r.gpu_memory[0] if r.gpu_memory else 0
    if gpu_memory is not None and total and gpu_memory > total:
        return Problem(r.server, f"--gpu-memory {gpu_memory} exceeds its GPU's {total} bytes")
    memory = gpu_memory if gpu_memory is not None else total
    if not memory:
        where = f"at http://{r.metrics}/metrics" if r.metrics else "(no metrics port answered)"
        return Problem(r.server, f"no GPU memory in its metrics {where}: pass --gpu-memory BYTES")
    return FleetGpu(
        id=gpu_id,
        gpu_type=gpu_type,
        memory_bytes=memory,
        server=r.server,
        http=r.http,
        metrics=r.metrics,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def gpu_ids(addresses: Sequence[Address]) -> list[str]:
    """One id per server, `<name>/0` (its one GPU): the host's first DNS label, as a
    StatefulSet's pod is named (`triton-0.triton` → `triton-0/0`); host:port where the
    host is an IP address or the labels would collide."""
    names = [str(a) if _is_ip(a.host) else a.host.split(".", 1)[0] for a in addresses]
    if len(set(names)) < len(names):
        names = [str(a) for a in addresses]
    return [f"{n}/0" for n in names]


def gpu_totals(text: str) -> tuple[int, ...]:
    """Total memory of each GPU in Triton's Prometheus text, in the order it lists them."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nv_gpu_memory_total_bytes":
                totals[sample.labels.get("gpu_uuid", str(len(totals)))] = int(sample.value)
    return tuple(totals.values())


def read_server(address: Address, timeout_s: float = 5.0) -> Reading:
    from model_repo_tools.triton_client import TritonServer

    server = str(address)
    with TritonServer(server, query_timeout_s=timeout_s) as triton:
        try:
            model_control = triton.takes_model_control()
        except ServerError as err:
            return Reading(server, unreachable=str(err).removeprefix(f"{server}: model control: "))
        live = triton.is_live()
    http = metrics = None
    totals: tuple[int, ...] = ()
    with httpx.Client(timeout=timeout_s) as client:
        url = f"http://{address.beside(HTTP_OFFSET)}/v2/health/live"
        with contextlib.suppress(httpx.HTTPError):
            if client.get(url).status_code == 200:
                http = address.beside(HTTP_OFFSET)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = client.get(f"http://{address.beside(METRICS_OFFSET)}/metrics")
            if resp.status_code == 200 and "nv_" in resp.text:
                totals = gpu_totals(resp.text)
                metrics = address.beside(METRICS_OFFSET)
    return Reading(server, None, live, model_control, totals, http, metrics)
