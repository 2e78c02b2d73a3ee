"""`tnx control serve`'s fleet and election flags: a wrong one is a one-line error naming it,
exit non-zero, before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.control.serve_files import serve_files
from tests.deploy.test_cli import one_line_error, tnx


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    (tmp_path / "repo").mkdir()
    (tmp_path / "fleet.json").write_text(json.dumps({"gpus": []}))
    return serve_files(tmp_path, tmp_path / "repo", [], [])


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ([], "--fleet / --fleet-from: give exactly one"),
        (["--fleet", "F", "--fleet-from", "k8s:tnx/triton"], "--fleet / --fleet-from"),
        (
            ["--fleet-from", "tnx/triton"],
            "--fleet-from 'tnx/triton': expected k8s:NAMESPACE/SERVICE",
        ),
        (
            ["--fleet", "F", "--gpu-type", "h200"],
            "--gpu-type / --gpu-memory: only with --fleet-from",
        ),
        (
            ["--fleet-from", "k8s:tnx/triton", "--gpu-memory", "0"],
            "--gpu-memory 0: must be positive",
        ),
        (["--fleet", "F", "--lease", "tnx"], "--lease 'tnx': expected NAMESPACE/NAME"),
    ],
)
def test_a_wrong_flag_is_one_line_naming_it(
    files: list[str], tmp_path: Path, flags: list[str], named: str
) -> None:
    flags = [str(tmp_path / "fleet.json") if f == "F" else f for f in flags]
    proc = tnx("control", "serve", *flags, *files, cwd=tmp_path, check=False)
    assert named in one_line_error(proc)


def test_lease_timings_that_cannot_elect_safely_are_refused(
    files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    proc = tnx(
        "control", "serve", "--fleet", str(tmp_path / "fleet.json"), "--lease", "tnx/tnx-control",
        "--lease-duration-s", "10", "--renew-deadline-s", "10", *files, cwd=tmp_path, check=False,
    )  # fmt: skip
    line = one_line_error(proc)
    assert "--lease tnx/tnx-control" in line and "renew deadline" in line


@pytest.mark.parametrize("in_pod", [False, True])
def test_no_kubernetes_api_is_one_line_naming_the_flag(
    files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_pod: bool
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    if in_pod:  # a pod without a service account token mounted
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    proc = tnx(
        "control", "serve", "--fleet-from", "k8s:tnx/triton", *files, cwd=tmp_path, check=False
    )
    line = one_line_error(proc)
    assert (
        line.startswith("error: --fleet-from: no Kubernetes API")
        or "--fleet-from: no Kubernetes API" in line
    )
    assert ("service account" in line) == in_pod


def test_a_single_replica_that_finds_no_server_says_so_in_one_line(
    files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.control.k8s_api import fake_api
    from tests.control.test_k8s_serve import kubeconfig

    with fake_api() as api:  # the Service has no endpoints
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", api.door())))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        proc = tnx(
            "control", "serve", "--fleet-from", "k8s:tnx/triton", "--gpu-type", "cpu",
            "--wait", "0.5", *files, cwd=tmp_path, check=False,
        )  # fmt: skip
    line = one_line_error(proc)
    assert "--fleet-from k8s:tnx/triton: no server qualifies after 0.5 s" in line
