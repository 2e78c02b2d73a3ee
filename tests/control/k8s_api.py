"""A tiny in-process Kubernetes API server for the few endpoints tnx uses, so that the real
`kubernetes` client does real HTTP in tests (no API server, kind or kubectl runs here).

It speaks the REST JSON of discovery.k8s.io/v1 EndpointSlices (list with a
labelSelector; watch from a resourceVersion, streamed as newline-delimited events,
ended by `timeoutSeconds`; 410 Gone for a version older than the last compaction)
and coordination.k8s.io/v1 Leases (get, create: 409 AlreadyExists, replace: 409
Conflict on a stale resourceVersion), with the API server's error body (a `Status`).
MicroTime fields must carry six fractional digits, as apimachinery's parser requires.
Each replica may be given a door of its own (`door()`): a door that is shut answers 503,
as an API server a replica cannot reach (a network partition) would.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SLICES = re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$")
LEASES = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?$")
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def endpoint_slice(
    name: str,
    service: str,
    endpoints: list[dict[str, Any]],
    namespace: str = "tnx",
    labels: dict[str, str] | None = None,
    address_type: str = "IPv4",
    grpc_port: int = 8001,
) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes one for `service`."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                **(labels or {}),
            },
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [
            {"name": "http", "port": grpc_port - 1, "protocol": "TCP"},
            {"name": "grpc", "port": grpc_port, "protocol": "TCP"},
            {"name": "metrics", "port": grpc_port + 1, "protocol": "TCP"},
        ],
    }


def endpoint(
    ip: str,
    hostname: str | None = None,
    pod: str | None = None,
    ready: bool = True,
    terminating: bool = False,
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
        "nodeName": "node-a",
    }
    if hostname:
        e["hostname"] = hostname
    if pod or hostname:
        e["targetRef"] = {"kind": "Pod", "namespace": "tnx", "name": pod or hostname}
    return e


class FakeApi:
    def __init__(self) -> None:
        self.version = 100
        self.compacted = 0  # watches from a version below this get 410 Gone
        self.generation = 0  # a compaction ends the watches open across it
        self.gone_as_status = False  # 410 as the watch request's status, not an ERROR event
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, ns, type, object)
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self.cond = threading.Condition()
        self.closing = False
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.shut: set[int] = set()  # ports of the doors that answer 503

    # ---- state --------------------------------------------------------------------

    def _bump(self, obj: dict[str, Any]) -> int:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return self.version

    def put_slice(self, obj: dict[str, Any]) -> None:
        with self.cond:
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            kind = "MODIFIED" if key in self.slices else "ADDED"
            obj = json.loads(json.dumps(obj))
            rv = self._bump(obj)
            self.slices[key] = obj
            self.events.append((rv, key[0], kind, obj))
            self.cond.notify_all()

    def delete_slice(self, namespace: str, name: str) -> None:
        with self.cond:
            obj = self.slices.pop((namespace, name))
            obj = json.loads(json.dumps(obj))
            rv = self._bump(obj)
            self.events.append((rv, namespace, "DELETED", obj))
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event history and end open watches: a watch resumed from a version
        older than now gets 410 Gone (the client must list again)."""
        with self.cond:
            self.version += 1
            self.compacted = self.version
            self.events.clear()
            self.generation += 1
            self.cond.notify_all()

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            got = self.leases.get((namespace, name))
            return json.loads(json.dumps(got)) if got else None

    # ---- serving ------------------------------------------------------------------

    def door(self) -> str:
        """A new port onto the same API server; its URL."""
        api = self

        class Handler(_Handler):
            fake = api

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.daemon = True
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(5)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, code: int, reason: str, message: str) -> None:
        self._send(code, status(code, reason, message))

    def _body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def _route(self, method: str) -> None:
        f = self.fake
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        f.requests.append((method, self.path))
        if self.server.server_address[1] in f.shut:
            self._fail(503, "ServiceUnavailable", "the door is shut")
            return
        if (m := SLICES.match(url.path)) and method == "GET":
            if query.get("watch") in ("true", "1"):
                self._watch(m.group(1), query)
            else:
                self._list(m.group(1), query)
            return
        if m := LEASES.match(url.path):
            self._lease(method, m.group(1), m.group(2))
            return
        self._fail(404, "NotFound", f"{method} {url.path}: not served here")

    do_GET = lambda self: self._route("GET")  # noqa: E731
    do_POST = lambda self: self._route("POST")  # noqa: E731
    do_PUT = lambda self: self._route("PUT")  # noqa: E731

    # ---- EndpointSlices -------------------------------------------------------------

    @staticmethod
    def _selected(obj: dict[str, Any], ns: str, selector: str | None) -> bool:
        if obj["metadata"]["namespace"] != ns:
            return False
        labels = obj["metadata"].get("labels") or {}
        for term in filter(None, (selector or "").split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        return True

    def _list(self, ns: str, query: dict[str, str]) -> None:
        f = self.fake
        with f.cond:
            items = [
                o for o in f.slices.values() if self._selected(o, ns, query.get("labelSelector"))
            ]
            body = {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(f.version)},
                "items": sorted(items, key=lambda o: o["metadata"]["name"]),
            }
        self._send(200, body)

    def _watch(self, ns: str, query: dict[str, str]) -> None:
        f = self.fake
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds") or 1800)
        if since < f.compacted and f.gone_as_status:
            self._fail(410, "Expired", "too old resource version")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(event: dict[str, Any]) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            if since < f.compacted:
                chunk(
                    {"type": "ERROR", "object": status(410, "Expired", "too old resource version")}
                )
            else:
                self._stream(ns, query, since, timeout, chunk)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _stream(
        self, ns: str, query: dict[str, str], since: int, timeout: float, chunk: Any
    ) -> None:
        import time

        f = self.fake
        deadline = time.monotonic() + timeout
        sent, generation = since, f.generation
        while True:
            with f.cond:
                if f.closing or f.generation != generation:
                    return
                todo = [e for e in f.events if e[0] > sent]
                if not todo:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    f.cond.wait(min(left, 0.2))
                    continue
            for rv, ens, kind, obj in todo:
                sent = rv
                if self._selected(obj, ns, query.get("labelSelector")) and ens == ns:
                    chunk({"type": kind, "object": obj})

    # ---- Leases ---------------------------------------------------------------------

    def _lease(self, method: str, ns: str, name: str | None) -> None:
        f = self.fake
        if method in ("POST", "PUT"):
            body = self._body()
            spec = body.get("spec") or {}
            for field in ("acquireTime", "renewTime"):
                if spec.get(field) is not None and not MICRO_TIME.match(spec[field]):
                    msg = f'Lease in version "v1" cannot be handled as a Lease: parsing time "{spec[field]}" as MicroTime'
                    self._fail(400, "BadRequest", msg)
                    return
        with f.cond:
            if name and method in ("GET", "PUT") and (ns, name) not in f.leases:
                self._fail(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
                return
            if method == "GET" and name:
                self._send(200, f.leases[(ns, name)])
                return
            if method == "POST" and not name:
                key = (ns, body["metadata"]["name"])
                if key in f.leases:
                    msg = f'leases.coordination.k8s.io "{key[1]}" already exists'
                    self._fail(409, "AlreadyExists", msg)
                    return
                body.update(apiVersion="coordination.k8s.io/v1", kind="Lease")
                body["metadata"]["namespace"] = ns
                f._bump(body)
                f.leases[key] = body
                self._send(201, body)
                return
            if method == "PUT" and name:
                cur = f.leases[(ns, name)]
                if body["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
                    msg = (
                        f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": '
                        "the object has been modified; please apply your changes to the latest version and try again"
                    )
                    self._fail(409, "Conflict", msg)
                    return
                body.update(apiVersion="coordination.k8s.io/v1", kind="Lease")
                body["metadata"]["namespace"] = ns
                f._bump(body)
                f.leases[(ns, name)] = body
                self._send(200, body)
                return
        self._fail(405, "MethodNotAllowed", f"{method} on leases")


@contextmanager
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    try:
        yield api
    finally:
        api.close()


def client_for(url: str) -> Any:
    """A real `kubernetes.client.ApiClient` talking to `url`."""
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = url
    return client.ApiClient(cfg)
