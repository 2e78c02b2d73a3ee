"""Issue 11 end to end: two torch models on one seeded backbone plus an unrelated model,
stored with `--share-prefix` (the backbone once, ensembles under the original names), served
by a real tritonserver through the control plane and the router, answering like torch; under
load on both, the prefix executes fewer times than the two suffixes together."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.router_setup import binary_request
from model_repo_tools.fleet import Fleet
from tests.deploy.test_cli import one_line_error, tnx

pytestmark = pytest.mark.integration
HEADS = ("backbone_classifier", "backbone_embedder")


@dataclass
class Shared:
    repo: Path
    onnx: dict[str, Path]
    prefix: str
    fleet: Fleet
    folder: Path


@pytest.fixture(scope="module")
def shared(exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    from deploy.fleet import start_fleet, stop_fleet
    from exporters.factory import load_factory
    from exporters.onnx_export import export_onnx
    from model_repo_tools.shared_prefix import add_shared

    folder = tmp_path_factory.mktemp("shared")
    embedder = export_onnx(
        load_factory("exporters.examples:backbone_embedder"),
        (3, 32, 32),
        folder / "backbone_embedder.onnx",
    )
    onnx = {
        "backbone_classifier": exported.backbone_onnx,
        "backbone_embedder": embedder,
        "tiny_mlp": exported.mlp_onnx,
    }
    repo = folder / "repo"
    stored = add_shared(list(onnx.values()), repo, max_batch=32)
    (prefix,) = stored.groups
    fleet = start_fleet(1, repo, folder / "fleet")
    try:
        yield Shared(repo, onnx, prefix, fleet, folder)
    finally:
        stop_fleet(fleet, grace_s=5)


def test_the_backbone_is_stored_once_and_the_unrelated_model_whole(shared: Shared) -> None:
    from model_repo_tools.check import check_repository
    from model_repo_tools.shared_prefix import model_bytes

    repo, p = shared.repo, shared.prefix
    assert sorted(x.name for x in repo.iterdir()) == sorted(
        [*HEADS, "tiny_mlp", p, f"{p}__backbone_classifier", f"{p}__backbone_embedder"]
    )
    unsplit = sum(f.stat().st_size for f in shared.onnx.values())
    assert model_bytes(repo) < 0.8 * unsplit
    assert (repo / "tiny_mlp" / "1" / "model.onnx").stat().st_size == shared.onnx[
        "tiny_mlp"
    ].stat().st_size
    assert check_repository(repo) == []
    scan = tnx("prefix", "scan", *map(str, shared.onnx.values()), cwd=shared.folder)
    assert "group: backbone_classifier, backbone_embedder" in scan.stdout
    assert "tiny_mlp: shares nothing" in scan.stdout
    check = tnx("repo", "check", str(repo), cwd=shared.folder)
    assert f"{p}: prefix shared by backbone_classifier" in check.stdout
    bad = tnx("prefix", "scan", str(shared.folder / "nope.onnx"), cwd=shared.folder, check=False)
    assert one_line_error(bad).endswith(f"{shared.folder / 'nope.onnx'}: no such ONNX file")


def _profiles(prefix: str) -> dict:
    def rows(fixed: float, per: float) -> list[dict]:
        return [
            {"batch": b, "latency_ms": fixed + per * b, "memory_bytes": 1}
            for b in (1, 2, 4, 8, 16, 32)
        ]

    models = {
        "tiny_mlp": rows(1.0, 0.1),
        "backbone_classifier": rows(3.0, 0.6),
        "backbone_embedder": rows(3.0, 0.6),
        prefix: rows(2.0, 0.5),
        f"{prefix}__backbone_classifier": rows(0.5, 0.05),
        f"{prefix}__backbone_embedder": rows(0.5, 0.05),
    }
    return {"profiles": [{"model": m, "gpu_type": "cpu", "batches": r} for m, r in models.items()]}


def _torch(factory: str, x: np.ndarray) -> np.ndarray:
    import torch

    from exporters.factory import load_factory

    with torch.no_grad():
        return load_factory(f"exporters.examples:{factory}")(torch.from_numpy(x)).numpy()


def _body(x: np.ndarray) -> dict:
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }


async def _load(url: str, n: int, concurrency: int = 32, samples: int = 8) -> list[int]:
    """`n` requests of `samples` samples each, alternating the two heads, `concurrency` in
    flight, binary tensors: the server, not the router's JSON parsing, is what queues."""
    x = np.random.default_rng(5).standard_normal((samples, 3, 32, 32), dtype=np.float32)
    body, json_size = binary_request(x, binary_output=False)
    headers = {"Inference-Header-Content-Length": str(json_size)}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> int:
            async with sem:
                url_i = f"{url}/v2/models/{HEADS[i % 2]}/infer"
                r = await client.post(url_i, content=body, headers=headers)
                return r.status_code

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_served_through_control_plane_and_router_like_torch(shared: Shared, tmp_path) -> None:
    from deploy.demo import spawn_router
    from deploy.fleet import free_port
    from deploy.services import spawn
    from model_repo_tools.triton_client import TritonServer

    shared.fleet.save(tmp_path / "fleet.json")
    (tmp_path / "profiles.json").write_text(json.dumps(_profiles(shared.prefix)))
    sessions = [
        {"id": "cls", "model": "backbone_classifier", "slo_ms": 1000, "rate": 20},
        {"id": "emb", "model": "backbone_embedder", "slo_ms": 1000, "rate": 20},
        {"id": "mlp", "model": "tiny_mlp", "slo_ms": 1000, "rate": 5},
    ]
    (tmp_path / "workload.json").write_text(json.dumps({"sessions": sessions}))
    router_port = free_port()
    args = ["control", "serve", "--fleet", str(tmp_path / "fleet.json")]
    args += ["--repo", str(shared.repo), "--profiles", str(tmp_path / "profiles.json")]
    args += ["--workload", str(tmp_path / "workload.json")]
    args += ["--router", f"http://127.0.0.1:{router_port}", "--epoch-s", "30"]
    args += ["--state", str(tmp_path / "state.sqlite")]
    services = []
    try:
        control = spawn("control", args, free_port(), "/healthz", tmp_path / "c.log")
        services.append(control)
        router = spawn_router(control.url, router_port, tmp_path / "r.log")
        services.append(router)
        plan = httpx.get(f"{control.url}/v1/plan").json()
        (gpu,) = plan["gpus"]
        assert {a["model"] for a in gpu["allocations"]} == {*HEADS, "tiny_mlp"}

        rng = np.random.default_rng(0)
        for b in (1, 3):
            x = rng.standard_normal((b, 3, 32, 32), dtype=np.float32)
            for model in HEADS:
                r = httpx.post(f"{router.url}/v2/models/{model}/infer", json=_body(x), timeout=30)
                assert r.status_code == 200, r.text
                out = r.json()["outputs"][0]
                got = np.asarray(out["data"], np.float32).reshape(out["shape"])
                assert np.abs(got - _torch(model, x)).max() < 1e-4
            # Triton serves the original names too (the ensembles), like torch.
            with TritonServer(shared.fleet.gpus[0].server) as server:
                got = server.infer("backbone_embedder", {"input": x})["output"]
                assert np.abs(got - _torch("backbone_embedder", x)).max() < 1e-4

        def counts(server: TritonServer, model: str) -> tuple[int, int]:
            (st,) = server.statistics(model)["model_stats"]
            return int(st.get("execution_count", 0)), int(st.get("inference_count", 0))

        names = [shared.prefix, *(f"{shared.prefix}__{h}" for h in HEADS)]
        with TritonServer(shared.fleet.gpus[0].server) as server:
            before = {m: counts(server, m) for m in names}
            codes = asyncio.run(_load(router.url, 240))
            after = {m: counts(server, m) for m in names}
        assert codes.count(200) >= 0.9 * len(codes), codes
        runs = {m: (after[m][0] - before[m][0], after[m][1] - before[m][1]) for m in names}
        print(f"(executions, inferences) under load: {runs}")  # shown with pytest -s
        p, sc, se = (runs[m] for m in names)
        assert p[1] == sc[1] + se[1] >= codes.count(200)  # every answer went the split path
        # Prefix batches mixed both models' requests: the backbone ran clearly fewer times.
        assert p[0] < 0.9 * (sc[0] + se[0]), runs
    finally:
        for s in reversed(services):
            s.stop(5)
