"""The router's backend: one batched `infer` per dispatch to the GPU's Triton server.

Each request's payload is a dict of input name → numpy array with the
request's samples on axis 0. A batch concatenates them on axis 0, calls the
GPU's server once, and slices every output back by the requests' sample
counts. The call goes over Triton's HTTP endpoint (`router.triton_http`, the
cheaper path from Python) where the fleet names it, else over gRPC. A refusal
of the inputs (HTTP 400, gRPC INVALID_ARGUMENT: bad shape, batch too large) is
the request's fault and leaves the GPU up; anything else, a server that lost
the model included, marks it down (`router.triton_errors`). Metadata,
configuration and health go through `tritonclient.grpc.aio`.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from model_repo_tools.fleet import Fleet
from router import kserve
from router.datatypes import triton_datatype
from router.triton_errors import triton_error
from router.triton_http import HttpInferClient
from router.types import Request
from tnx.errors import ServerError

# A health probe's call: a live server answers in a millisecond; one that is stopped
# (SIGSTOP) or swamped must not hold the probe past its next tick.
PROBE_TIMEOUT_S = 0.5
# A model reloaded with a new configuration (the actuator's overrides) shows within one
# control epoch (30 s by default); perf_analyzer reads the config once per run.
CONFIG_TTL_S = 30.0


class TritonBackend:
    """The `router.backend.Backend` of a fleet of Triton servers."""

    def __init__(self, fleet: Fleet, timeout_s: float = 30.0) -> None:
        import tritonclient.grpc.aio as grpcaio

        self._aio = grpcaio
        self._servers = {g.id: g.server for g in fleet.gpus}
        self._clients: dict[str, Any] = {}
        # Inference goes over HTTP where the fleet says where, else over plain gRPC stubs.
        self._http = {g.id: g.http for g in fleet.gpus if g.http}
        self._http_clients: dict[str, HttpInferClient] = {}
        self._stubs: dict[str, Any] = {}
        self._channels: list[Any] = []
        self._timeout_s = timeout_s
        self._configs: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def server(self, gpu: str) -> str:
        try:
            return self._servers[gpu]
        except KeyError:
            raise ServerError(f"gpu {gpu!r} is not in the fleet") from None

    def _client(self, gpu: str) -> Any:
        client = self._clients.get(gpu)
        if client is None:
            # Clients share a server's channel when several GPUs sit on one server.
            client = self._clients[gpu] = self._aio.InferenceServerClient(self.server(gpu))
        return client

    def set_fleet(self, fleet: Fleet) -> None:
        """Adopt a new fleet; clients of servers that left are closed."""
        new = {g.id: g.server for g in fleet.gpus}
        for gid in [g for g in self._clients if self._servers.get(g) != new.get(g)]:
            client = self._clients.pop(gid)
            asyncio.get_running_loop().create_task(client.close())
        self._servers = new
        self._http = {g.id: g.http for g in fleet.gpus if g.http}

    def _stub(self, gpu: str) -> Any:
        server = self.server(gpu)
        stub = self._stubs.get(server)
        if stub is None:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            # Unbounded messages, as tritonclient sets them: a batch of images is large.
            options = [
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
            ]
            channel = grpc.aio.insecure_channel(server, options=options)
            stub = self._stubs[server] = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            self._channels.append(channel)
        return stub

    async def infer(
        self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
    ) -> list[dict[str, np.ndarray]]:
        """One call with the batch's inputs concatenated on axis 0, sliced back per request:
        over HTTP (router.triton_http) where the fleet gives the server's HTTP address, else
        over gRPC with `timeout_s` (else the backend's own) as the call's deadline. The HTTP
        call has none of its own: the driver cancels it at its deadline, which closes its
        connection."""
        first = batch[0].payload
        if len(batch) == 1:
            inputs = first
        else:
            inputs = {name: np.concatenate([r.payload[name] for r in batch]) for name in first}
        http = self._http_client(gpu)
        if http is not None:
            outputs = await http.infer(model, inputs)
        else:
            outputs = await self._grpc_infer(gpu, model, inputs, timeout_s)
        if len(batch) == 1:
            return [outputs]
        answers, start = [], 0
        for r in batch:
            stop = start + r.n_samples
            answers.append({n: a[start:stop] for n, a in outputs.items()})
            start = stop
        return answers

    def _http_client(self, gpu: str) -> HttpInferClient | None:
        address = self._http.get(gpu)
        if address is None:
            return None
        client = self._http_clients.get(address)
        if client is None:
            client = self._http_clients[address] = HttpInferClient(address)
        return client

    async def _grpc_infer(
        self, gpu: str, model: str, inputs: dict[str, np.ndarray], timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        """One ModelInfer call, built straight as protobuf (tritonclient's InferInput and
        InferResult wrappers cost more than the call's own Python side at batch 1)."""
        import grpc
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelInferRequest(model_name=model)
        for name, array in inputs.items():
            datatype = triton_datatype(array.dtype)
            # The tensor's bytes go in raw_input_contents, in the order of the inputs.
            request.inputs.add(name=name, datatype=datatype, shape=array.shape)
            request.raw_input_contents.append(kserve.to_binary(array, datatype))
        try:
            response = await self._stub(gpu).ModelInfer(
                request, timeout=self._timeout_s if timeout_s is None else timeout_s
            )
        except grpc.aio.AioRpcError as err:
            msg = ((err.details() or str(err.code())).strip().splitlines() or [""])[0]
            refused = err.code() == grpc.StatusCode.INVALID_ARGUMENT
            raise triton_error(f"{self.server(gpu)}: {model}", msg, refused=refused) from None
        return {
            o.name: kserve.from_binary(
                memoryview(raw), o.datatype, list(o.shape), f"{self.server(gpu)}: {model}"
            )
            for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }

    async def ready(self, gpu: str, models: Iterable[str] = ()) -> bool:
        """Health probe: the GPU's server answers live, and each of `models` ready on it (a
        server restarted empty is up but serves nothing). Live, not server-ready: with
        Triton's strict readiness a server is not ready while any model loads, e.g. the
        control plane loading another model there."""
        from tritonclient.utils import InferenceServerException

        client = self._client(gpu)
        try:
            if not await client.is_server_live(client_timeout=PROBE_TIMEOUT_S):
                return False
            for model in models:
                if not await client.is_model_ready(model, client_timeout=PROBE_TIMEOUT_S):
                    return False
        except (InferenceServerException, OSError):
            return False
        return True

    async def metadata(self, gpu: str, model: str) -> tuple[dict[str, Any], int]:
        """(model metadata as Triton's HTTP JSON, max_batch_size) from the GPU's server."""
        from tritonclient.utils import InferenceServerException

        client = self._client(gpu)
        try:
            meta = await client.get_model_metadata(model, as_json=True, client_timeout=10.0)
            cfg = await client.get_model_config(model, as_json=True, client_timeout=10.0)
        except InferenceServerException as err:
            msg = (err.message() or str(err)).strip().splitlines()[0]
            raise ServerError(f"{self.server(gpu)}: metadata of {model}: {msg}") from None
        # gRPC's JSON spells int64 shapes as strings; Triton's HTTP metadata has ints.
        for t in meta.get("inputs", []) + meta.get("outputs", []):
            t["shape"] = [int(d) for d in t.get("shape", [])]
        return meta, int(cfg["config"].get("max_batch_size", 0))

    async def model_config(self, gpu: str, model: str) -> dict[str, Any]:
        """The model's configuration from the GPU's server, as Triton's HTTP endpoint gives
        it (`config_json`); cached per server for CONFIG_TTL_S. The caller owns the copy."""
        from tritonclient.utils import InferenceServerException

        key = (self.server(gpu), model)
        now = time.monotonic()
        hit = self._configs.get(key)
        if hit is None or now - hit[0] > CONFIG_TTL_S:
            try:
                response = await self._client(gpu).get_model_config(model, client_timeout=10.0)
            except InferenceServerException as err:
                msg = (err.message() or str(err)).strip().splitlines()[0]
                raise ServerError(f"{key[0]}: config of {model}: {msg}") from None
            hit = self._configs[key] = (now, config_json(response.config))
        return copy.deepcopy(hit[1])

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        for http in self._http_clients.values():
            await http.close()
        self._http_clients.clear()
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()


def config_json(config: Any) -> dict[str, Any]:
    """A `model_config_pb2.ModelConfig` as Triton's HTTP `GET /v2/models/{m}/config` spells it:
    every field, defaults included, and 64-bit integers as JSON numbers (protobuf's JSON
    mapping, and so gRPC's `as_json`, writes them as strings, which perf_analyzer rejects)."""
    from google.protobuf import json_format

    try:
        data = json_format.MessageToDict(
            config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26 names the option differently
        data = json_format.MessageToDict(
            config, preserving_proto_field_name=True, including_default_value_fields=True
        )
    _int64_as_numbers(config.DESCRIPTOR, data)
    return data


def _int64_as_numbers(descriptor: Any, data: dict[str, Any]) -> None:
    from google.protobuf.descriptor import FieldDescriptor

    wide = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)
    for field in descriptor.fields:
        value = data.get(field.name)
        if value is None:
            continue
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            entry = message.fields_by_name["value"]
            if entry.message_type is not None:
                for item in value.values():
                    _int64_as_numbers(entry.message_type, item)
            elif entry.cpp_type in wide:
                data[field.name] = {k: int(v) for k, v in value.items()}
        elif message is not None:
            for item in value if isinstance(value, list) else [value]:
                _int64_as_numbers(message, item)
        elif field.cpp_type in wide:
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
