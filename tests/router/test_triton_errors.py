"""router.triton_errors: a refused batch or a failed server, from Triton's codes and texts;
and HttpInferClient's use of it against a canned HTTP server."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from router.backend import BatchRejectedError
from router.triton_errors import model_gone, triton_error
from router.triton_http import HttpInferClient
from tnx.errors import ServerError

# Triton's own texts (2.51 answers the first two with HTTP 404 / gRPC NOT_FOUND, older
# versions with 400 / INVALID_ARGUMENT or UNAVAILABLE), and a server not ready yet.
GONE = [
    "Request for unknown model: 'tiny_mlp' is not found",
    "Request for unknown model: 'echo' has no available versions",
    "'tiny_mlp' version 1 is not at ready state",
    "Server is not ready",
]
REFUSALS = [
    "[request id: <id_unknown>] unexpected shape for input 'input' for model 'echo'. "
    "Expected [-1,4], got [1,5].",
    "inference request batch-size must be <= 8 for 'echo'",
    "unexpected datatype TYPE_INT32 for inference input 'input', expecting TYPE_FP32",
]


@pytest.mark.parametrize("message", GONE)
def test_a_server_without_the_model_is_a_failed_server(message: str) -> None:
    assert model_gone(message)
    err = triton_error("h:1: m", message, refused=True)
    assert type(err) is ServerError and str(err) == f"h:1: m: {message}"


@pytest.mark.parametrize("message", REFUSALS)
def test_a_refusal_of_the_inputs_is_a_rejected_batch(message: str) -> None:
    assert not model_gone(message)
    assert isinstance(triton_error("h:1: m", message, refused=True), BatchRejectedError)
    assert type(triton_error("h:1: m", message, refused=False)) is ServerError


async def _canned(status: int, error: str) -> tuple[asyncio.Server, str]:
    """An HTTP server that answers every request with `status` and Triton's error body."""
    body = json.dumps({"error": error}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (400, GONE[0], ServerError),  # an older Triton, restarted empty
        (404, GONE[1], ServerError),
        (400, REFUSALS[0], BatchRejectedError),
        (500, "internal", ServerError),
    ],
)
async def test_http_client_classifies_triton_answers(
    status: int, message: str, error: type[ServerError]
) -> None:
    server, address = await _canned(status, message)
    client = HttpInferClient(address)
    try:
        with pytest.raises(ServerError) as info:
            await client.infer("m", {"input": np.zeros((1, 4), np.float32)})
        assert type(info.value) is error
        assert f"HTTP {status}" in str(info.value) and message in str(info.value)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
