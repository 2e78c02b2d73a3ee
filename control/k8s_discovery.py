"""Fleet discovery from a headless Service's EndpointSlices (`--fleet-from k8s:NS/SERVICE`):
list and watch them through the `kubernetes` client's DiscoveryV1Api, and keep the
control plane's fleet to what they name.

`SliceWatch` lists the Service's slices (label `kubernetes.io/service-name`) and
watches from the list's resourceVersion, as client-go's reflector does: each event
updates its copy, the whole copy goes to `on_slices`; a stream that ends (the server's
`timeoutSeconds`) is resumed from the last version seen, a 410 Gone is answered by
listing again, and an API server that cannot be reached is asked again `retry_s`
later. The client blocks, so it runs in a thread of its own; events are decoded into
the client's own models (`ApiClient.deserialize`).

`FleetDiscovery` turns slices into servers (`control.endpoints`), diffs them with the
fleet (`control.membership`) and applies the diff to the control plane: a candidate
joins once it qualifies as `tnx fleet attach` requires (`control.qualify`: live,
explicit model control, one GPU, its memory known), asked again every `retry_s` until
it does; a server gone leaves as a failed one. Its GPU type is `--gpu-type`, else the
Service's label `tnx.dev/gpu-type` (the EndpointSlice controller copies a Service's
labels onto its slices); its memory `--gpu-memory`, else the label `tnx.dev/gpu-memory`
(bytes), else what Triton's metrics say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from control.endpoints import (
    GPU_MEMORY_LABEL,
    GPU_TYPE_LABEL,
    ServiceRef,
    Target,
    service_label,
    targets,
)
from control.membership import FORGET_AFTER_S, diff
from control.qualify import Problem, Reading, parse_address, qualify, read_server
from model_repo_tools.fleet import Fleet, FleetGpu
from tnx.errors import FleetError

log = logging.getLogger(__name__)


class SliceWatch:
    def __init__(
        self,
        api_client: Any,
        service: ServiceRef,
        on_slices: Callable[[list[Any]], None],
        watch_timeout_s: int = 300,
        retry_s: float = 2.0,
    ) -> None:
        from kubernetes import client

        self._client, self._api_client = client, api_client
        self._api = client.DiscoveryV1Api(api_client)
        self.service, self.on_slices = service, on_slices
        self.watch_timeout_s, self.retry_s = watch_timeout_s, retry_s
        self.slices: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"endpointslices {self.service}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        # End a watch blocked on its stream: shut its socket down (closing the response
        # from this thread would wait for the reader's lock, held until the next event).
        if (resp := self._response) is not None:
            with (
                contextlib.suppress(OSError, ValueError),
                socket.socket(fileno=os.dup(resp.fileno())) as dup,
            ):
                dup.shutdown(socket.SHUT_RDWR)  # the connection's, not only the dup's
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
            except self._client.ApiException as err:
                version = None  # a 410 Gone (too old) as the watch's answer: list again now
                if err.status != 410 and not self._stop.is_set():
                    log.warning("endpointslices of %s: %s %s", self.service, err.status, err.reason)
                    self._stop.wait(self.retry_s)
            except Exception as err:  # unreachable, refused, malformed: ask again later
                if not self._stop.is_set():
                    log.warning("endpointslices of %s: %s", self.service, err)
                version = None
                self._stop.wait(self.retry_s)

    def _list(self) -> str:
        got = self._api.list_namespaced_endpoint_slice(
            self.service.namespace,
            label_selector=self.service.selector,
            _request_timeout=30,
        )
        self.slices = {s.metadata.name: s for s in got.items}
        self._publish()
        return got.metadata.resource_version

    def _watch(self, version: str) -> str | None:
        """Follow changes from `version`; the version to resume from, None to list again."""
        self._response = resp = self._api.list_namespaced_endpoint_slice(
            self.service.namespace,
            label_selector=self.service.selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=self.watch_timeout_s,
            _preload_content=False,
            _request_timeout=(10, self.watch_timeout_s + 30),
        )
        try:
            buffer = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in filter(None, (x.strip() for x in lines)):
                    version = self._event(json.loads(line), version)
                    if version is None:
                        return None
                if self._stop.is_set():
                    break
        finally:
            self._response = None
            resp.release_conn()
        return version

    def _event(self, event: dict[str, Any], version: str) -> str | None:
        kind, raw = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if raw.get("code") == 410:  # too old: the list must be read again
                return None
            raise self._client.ApiException(status=raw.get("code"), reason=raw.get("message"))
        version = (raw.get("metadata") or {}).get("resourceVersion") or version
        if kind == "BOOKMARK":
            return version
        obj = self._api_client.deserialize(json.dumps(raw), "V1EndpointSlice", "application/json")
        if kind == "DELETED":
            self.slices.pop(obj.metadata.name, None)
        else:
            self.slices[obj.metadata.name] = obj
        self._publish()
        return version

    def _publish(self) -> None:
        self.on_slices(list(self.slices.values()))


class FleetDiscovery:
    def __init__(
        self,
        service: ServiceRef,
        gpu_type: str | None = None,
        gpu_memory: int | None = None,
        retry_s: float = 5.0,
        forget_after_s: float = FORGET_AFTER_S,
        read: Callable[[str], Reading] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service, self.gpu_type, self.gpu_memory = service, gpu_type, gpu_memory
        self.retry_s, self.forget_after_s = retry_s, forget_after_s
        self._read = read or (lambda server: read_server(parse_address(server), timeout_s=2.0))
        self._now = now
        self.slices: list[Any] = []
        self.departed: dict[str, float] = {}
        self.problems: dict[str, str] = {}  # server → why it does not qualify (yet)
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen_once = asyncio.Event()

    def on_slices(self, slices: list[Any]) -> None:
        """From `SliceWatch`'s thread (or the loop): the Service's slices now."""
        assert self._loop is not None, "bind() the discovery to its event loop first"
        self._loop.call_soon_threadsafe(self._take, slices)

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _take(self, slices: list[Any]) -> None:
        self.slices = slices
        self._seen_once.set()
        self._changed.set()

    def named(self) -> dict[str, Target]:
        return targets(self.slices, self.service)

    def _kind(self) -> tuple[str, int | None] | str:
        """(GPU type, memory or None: from the metrics), or why they are not known."""
        gpu_type = self.gpu_type or service_label(self.slices, GPU_TYPE_LABEL)
        if gpu_type is None:
            return f"no GPU type: pass --gpu-type or label Service {self.service} {GPU_TYPE_LABEL}"
        if self.gpu_memory is not None:
            return gpu_type, self.gpu_memory
        label = service_label(self.slices, GPU_MEMORY_LABEL)
        if label is None:
            return gpu_type, None
        if not label.isdigit() or int(label) <= 0:
            return (
                f"Service {self.service} label {GPU_MEMORY_LABEL}={label!r}: not a number of bytes"
            )
        return gpu_type, int(label)

    async def qualify(self, candidates: list[Target]) -> list[FleetGpu]:
        """Those of `candidates` that qualify now; the others' reasons in `problems`."""
        kind = self._kind()
        if isinstance(kind, str):
            self._note(dict.fromkeys((t.server for t in candidates), kind))
            return []
        gpu_type, gpu_memory = kind
        readings = await asyncio.gather(
            *(asyncio.to_thread(self._read, t.server) for t in candidates)
        )
        out, problems = [], {}
        for t, r in zip(candidates, readings, strict=True):
            v = qualify(r, t.gpu_id, gpu_type, gpu_memory)
            if isinstance(v, Problem):
                problems[t.server] = v.reason
            else:
                out.append(v)
                self.problems.pop(t.server, None)
        self._note(problems)
        return out

    def _note(self, problems: dict[str, str]) -> None:
        for server, why in problems.items():
            if self.problems.get(server) != why:  # each new reason once, not every retry
                log.warning("server %s of %s does not qualify (yet): %s", server, self.service, why)
        self.problems.update(problems)

    async def initial(self, wait_s: float) -> Fleet:
        """The first fleet: every server named once all qualify, or after `wait_s` those
        that do (at least one; FleetError naming why not otherwise)."""
        self.bind()
        deadline = self._now() + wait_s
        joined: dict[str, FleetGpu] = {}
        while True:
            if not self._seen_once.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._seen_once.wait(), max(0.0, deadline - self._now()))
            named = self.named()
            if todo := [t for s, t in sorted(named.items()) if s not in joined]:
                joined.update({g.server: g for g in await self.qualify(todo)})
            joined = {s: g for s, g in joined.items() if s in named}
            if (named and len(joined) == len(named)) or self._now() >= deadline:
                break
            await asyncio.sleep(min(self.retry_s, max(0.0, deadline - self._now())))
        if not joined:
            if not self._seen_once.is_set():
                raise FleetError(
                    f"--fleet-from k8s:{self.service}: its EndpointSlices could not be read within {wait_s:g} s"
                )
            named = self.named()
            whys = "; ".join(f"server {s}: {self.problems.get(s, '?')}" for s in sorted(named))
            raise FleetError(
                f"--fleet-from k8s:{self.service}: no server qualifies after {wait_s:g} s"
                + (f" ({whys})" if whys else " (its EndpointSlices name none)")
            )
        return Fleet(gpus=sorted(joined.values(), key=lambda g: g.id))

    async def sync(self, cp: Any) -> None:
        """Apply what the slices say now to `cp` (a `control.service.ControlPlane`)."""
        now = self._now()
        named = self.named()
        change = diff(
            {g.server for g in cp.fleet.gpus}, self.departed, named, now, self.forget_after_s
        )
        if change.gone:
            why = f"gone from the EndpointSlices of {self.service}"
            log.warning("servers %s %s", ", ".join(change.gone), why)
            cp.leave(list(change.gone), why)
            self.departed.update(dict.fromkeys(change.gone, now))
        if change.forget:
            cp.monitor.forget(list(change.forget))
            for s in change.forget:
                self.departed.pop(s, None)
        if change.candidates:
            joined = await self.qualify(list(change.candidates))
            # Named still? The slices may have changed while the servers were asked.
            joined = [g for g in joined if g.server in self.named()]
            if joined:
                log.warning("servers %s join the fleet", ", ".join(g.server for g in joined))
                cp.join(joined)
                for g in joined:
                    self.departed.pop(g.server, None)

    async def follow(self, cp: Any) -> None:
        """Run until cancelled: apply each change, and ask candidates again every `retry_s`."""
        while True:
            self._changed.clear()
            try:
                await self.sync(cp)
            except Exception:  # a broken round must not stop the next
                log.exception("fleet discovery of %s failed", self.service)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.retry_s)
