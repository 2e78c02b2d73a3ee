"""A synchronous handle on one Triton server's model-repository and inference APIs (gRPC).

tritonclient's InferenceServerException enters here and leaves as ServerError,
naming the server and the model, so callers (CLI, profiler, actuator) print one
line instead of a gRPC traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from tnx.errors import ServerError


@contextlib.contextmanager
def translated(server: str, what: str) -> Iterator[None]:
    from tritonclient.utils import InferenceServerException

    try:
        yield
    except InferenceServerException as err:
        msg = (err.message() or str(err)).strip().splitlines()[0]
        raise ServerError(f"{server}: {what}: {msg}") from None


class TritonServer:
    def __init__(self, address: str, timeout_s: float = 60.0, query_timeout_s: float = 5.0) -> None:
        import tritonclient.grpc as grpcclient

        self.address = address
        self.timeout_s = timeout_s  # loads, unloads, inference
        # Reads of state (index, config, readiness): a hung server must not hang the caller.
        self.query_timeout_s = query_timeout_s
        self._grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(address)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self.client.is_server_ready(client_timeout=2.0))
        except InferenceServerException:
            return False

    def load(self, model: str, config_json: str | None = None) -> None:
        with translated(self.address, f"load {model}"):
            self.client.load_model(model, config=config_json, client_timeout=self.timeout_s)

    def unload(self, model: str, wait: bool = True) -> None:
        """Unload `model`; with `wait`, return once the server has finished unloading it
        (Triton answers at once and keeps the model UNLOADING while its instances stop)."""
        from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

        with translated(self.address, f"unload {model}"):
            self.client.unload_model(model, client_timeout=self.timeout_s)
        if wait:
            Retrying(
                stop=stop_after_delay(self.timeout_s),
                wait=wait_fixed(0.05),
                retry=retry_if_result(lambda state: state == "UNLOADING"),
                retry_error_callback=lambda _: None,  # still unloading: the caller goes on
            )(self._state, model)

    def _state(self, model: str) -> str | None:
        return next((m.get("state") for m in self.repository_index() if m["name"] == model), None)

    def is_live(self) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self.client.is_server_live(client_timeout=2.0))
        except InferenceServerException:
            return False

    def takes_model_control(self) -> bool:
        """Whether the server loads and unloads on request (`--model-control-mode=explicit`):
        unloading a name no repository holds is a no-op there and refused in the other modes.
        ServerError when the server cannot be asked."""
        from tritonclient.utils import InferenceServerException

        with translated(self.address, "model control"):
            try:
                self.client.unload_model(
                    "__tnx_model_control_probe__", client_timeout=self.query_timeout_s
                )
            except InferenceServerException as err:
                if "not allowed" not in str(err.message()):
                    raise
                return False
        return True

    def is_model_ready(self, model: str) -> bool:
        with translated(self.address, f"ready {model}"):
            return bool(self.client.is_model_ready(model, client_timeout=self.query_timeout_s))

    def repository_index(self) -> list[dict[str, Any]]:
        """Each model of the repository with its `state` (READY, UNAVAILABLE, …)."""
        with translated(self.address, "repository index"):
            index = self.client.get_model_repository_index(
                as_json=True, client_timeout=self.query_timeout_s
            )
        return list(index.get("models", []))

    def config(self, model: str) -> dict[str, Any]:
        with translated(self.address, f"config of {model}"):
            return self.client.get_model_config(
                model, as_json=True, client_timeout=self.query_timeout_s
            )["config"]

    def metadata(self, model: str) -> dict[str, Any]:
        with translated(self.address, f"metadata of {model}"):
            return self.client.get_model_metadata(
                model, as_json=True, client_timeout=self.query_timeout_s
            )

    def statistics(self, model: str) -> dict[str, Any]:
        with translated(self.address, f"statistics of {model}"):
            return self.client.get_inference_statistics(model, as_json=True)

    def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        from tritonclient.utils import np_to_triton_dtype

        tensors = []
        for name, array in inputs.items():
            t = self._grpc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array)
            tensors.append(t)
        with translated(self.address, f"infer {model}"):
            result = self.client.infer(model, tensors, client_timeout=self.timeout_s)
            names = outputs or [o["name"] for o in result.get_response(as_json=True)["outputs"]]
            return {n: result.as_numpy(n) for n in names}
