"""Triton Python-backend model that serves an ONNX file with onnxruntime.

This file is copied verbatim into a repository as `<model>/<version>/model.py`;
it runs inside Triton's Python stub, so it imports only numpy, onnxruntime and
`triton_python_backend_utils`. Every request of one `execute` call is
concatenated on axis 0 and run as a single onnxruntime batch, then split back:
the batch the router (or Triton's dynamic batcher) formed is the batch that runs.

An instance of kind GPU runs on onnxruntime's CUDA execution provider (and its
TensorRT one first, where the `tensorrt` package is there too), on the instance's
device; where this onnxruntime has no CUDA provider (the CPU wheel) it runs on the
CPU and says so in the server's log. The providers in use are logged either way.

Config parameters: `onnx_file` (default model.onnx, relative to the version
folder), `intra_op_threads` (default 1), `tensorrt` (auto, on or off; default auto).
"""

import importlib.util
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The bundled stub was built against numpy 1. Under numpy 2 its numpy views are wrong
# without an error (an output made by pb_utils.Tensor(name, array) arrives empty; seen
# on an H200 machine with numpy 2.5), so tensors cross by DLPack instead, with the
# legacy capsule the stub understands.
_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def _array(tensor):
    return np.from_dlpack(tensor) if _NUMPY2 else tensor.as_numpy()


def _tensor(name, array):
    if _NUMPY2:
        return pb_utils.Tensor.from_dlpack(name, array.__dlpack__())
    return pb_utils.Tensor(name, array)


def choose_providers(kind, device_id, available, tensorrt="auto"):
    """The execution providers for an instance of `kind` ("GPU" or "CPU") on `device_id`,
    best first, among `available`; and why a GPU instance runs on the CPU (else None)."""
    if kind != "GPU":
        return ["CPUExecutionProvider"], None
    if "CUDAExecutionProvider" not in available:
        why = (
            "a GPU instance, but this onnxruntime has no CUDAExecutionProvider (it has "
            f"{', '.join(sorted(available))}): running on the CPU; install onnxruntime-gpu"
        )
        return ["CPUExecutionProvider"], why
    options = {"device_id": device_id}
    providers = [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    trt = tensorrt == "on" or (
        tensorrt == "auto" and importlib.util.find_spec("tensorrt") is not None
    )
    if trt and "TensorrtExecutionProvider" in available:
        providers.insert(0, ("TensorrtExecutionProvider", options))
    return providers, None


def _log(message, warn=False):
    logger = getattr(pb_utils, "Logger", None)  # the Python backend's logger, r23.04 on
    if logger is None:
        print(message, file=sys.stderr, flush=True)
    elif warn:
        logger.log_warn(message)
    else:
        logger.log_info(message)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(folder, params.get("onnx_file") or "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads") or 1)
        opts.inter_op_num_threads = 1
        kind = args.get("model_instance_kind", "CPU")
        device = int(args.get("model_instance_device_id") or 0)
        providers, why = choose_providers(
            kind, device, set(ort.get_available_providers()), params.get("tensorrt") or "auto"
        )
        if why:
            _log(f"tnx runner: {args['model_name']}: {why}", warn=True)
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        used = self.session.get_providers()
        _log(f"tnx runner: {args['model_name']} ({kind} {device}) runs on {', '.join(used)}")
        if kind == "GPU" and "CUDAExecutionProvider" not in used and not why:
            _log(f"tnx runner: {args['model_name']}: CUDA failed to start, on the CPU", warn=True)
        self.input_names = [i["name"] for i in config["input"]]
        self.outputs = [
            (o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]
        ]

    def execute(self, requests):
        feeds, sizes = {}, []
        for name in self.input_names:
            parts = [_array(pb_utils.get_input_tensor_by_name(r, name)) for r in requests]
            if not sizes:
                sizes = [p.shape[0] for p in parts]
            feeds[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        names = [n for n, _ in self.outputs]
        try:
            results = self.session.run(names, feeds)
        except Exception as err:  # report per request instead of crashing the stub
            error = pb_utils.TritonError(f"onnxruntime: {err}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [
                _tensor(n, np.ascontiguousarray(res[start : start + size].astype(dt, copy=False)))
                for (n, dt), res in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
