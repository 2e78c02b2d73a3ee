"""The Triton servers a headless Service's EndpointSlices name (discovery.k8s.io/v1), pure.

`tnx control serve --fleet-from k8s:NAMESPACE/SERVICE` reads the Service's
EndpointSlices (label `kubernetes.io/service-name`); `targets` turns them into the
servers to plan on: one per endpoint, by its gRPC port (the Service port named
`grpc`). An endpoint that is terminating is gone (its pod is being deleted: its
sessions move before it exits); one that is not ready still counts, since tnx plans
on liveness, not readiness (`control.probe`): a Triton whose model failed to load
answers not-ready and is still a server to plan on (or to be told about).

A StatefulSet's pod has a hostname under the Service, so it is named by its stable
DNS name, `triton-0.triton.tnx.svc:8001`, and its GPU `triton-0/0` (as `tnx fleet
attach` names it): a pod replaced under the same name is the same server, which
fails back to its sessions. Other endpoints are named by address and pod.

`targets` reads the client's `V1EndpointSlice` models by attribute; the client is
imported only by the I/O (`control.k8s_discovery`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from control.qualify import Address, gpu_ids
from tnx.errors import UserInputError

SERVICE_NAME_LABEL = (
    "kubernetes.io/service-name"  # set on each slice by the EndpointSlice controller
)
# Labels of the Service that the EndpointSlice controller copies onto its slices: tnx reads
# there what --gpu-type and --gpu-memory (bytes) say when they are not given.
GPU_TYPE_LABEL = "tnx.dev/gpu-type"
GPU_MEMORY_LABEL = "tnx.dev/gpu-memory"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str

    @property
    def selector(self) -> str:
        return f"{SERVICE_NAME_LABEL}={self.name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_fleet_from(text: str) -> ServiceRef:
    """`k8s:NAMESPACE/SERVICE` → the Service; UserInputError naming the flag otherwise."""
    kind, _, rest = text.partition(":")
    namespace, _, name = rest.partition("/")
    if kind != "k8s" or not _DNS_LABEL.match(namespace) or not _DNS_LABEL.match(name):
        raise UserInputError(
            f"--fleet-from {text!r}: expected k8s:NAMESPACE/SERVICE (e.g. k8s:tnx/triton)"
        )
    return ServiceRef(namespace, name)


@dataclass(frozen=True, slots=True)
class Target:
    """A server an EndpointSlice names."""

    server: str  # gRPC host:port (fleet.json's `server`)
    gpu_id: str
    pod: str | None = None


def _host(address: str, address_type: str) -> str:
    return f"[{address}]" if address_type == "IPv6" else address


def targets(
    slices: Iterable[Any], service: ServiceRef, port_name: str = "grpc"
) -> dict[str, Target]:
    """The servers `slices` (the Service's `V1EndpointSlice`s) name, by gRPC address."""
    out: dict[str, Target] = {}
    gpus: set[str] = set()
    for s in slices:
        if s.address_type not in ("IPv4", "IPv6"):
            continue  # FQDN slices are mirrored by hand, not made from pods
        port = next((p.port for p in s.ports or () if p.name == port_name and p.port), None)
        if port is None:
            continue
        for e in s.endpoints or ():
            cond = e.conditions
            if cond is not None and cond.terminating:
                continue
            pod = (
                e.target_ref.name
                if e.target_ref is not None and e.target_ref.kind == "Pod"
                else None
            )
            if e.hostname:
                server = f"{e.hostname}.{service.name}.{service.namespace}.svc:{port}"
                gpu = f"{e.hostname}/0"
            elif e.addresses:
                address = Address(_host(e.addresses[0], s.address_type), port)
                server = str(address)
                gpu = f"{pod}/0" if pod else gpu_ids([address])[0]
            else:
                continue
            # A dual-stack Service has a slice per family: a pod is one server, first seen.
            if server not in out and gpu not in gpus:
                out[server] = Target(server, gpu, pod)
                gpus.add(gpu)
    return out


def service_label(slices: Iterable[Any], key: str) -> str | None:
    """The value the Service's label `key` has on its slices (None: on none of them)."""
    values = {(s.metadata.labels or {}).get(key) for s in slices if s.metadata is not None}
    values.discard(None)
    return min(values) if values else None
