"""deploy/k8s/: every manifest validates against Kubernetes 1.37's schemas
(`kubernetes-validate --strict`), the GPU overlay too, and the objects agree with one
another, with tnx's real commands and with the contracts tnx reads.

No API server, kind or kustomize binary can run here. The overlay is assembled by
`build` below: what `kustomize build` does for the features these kustomizations use
(resources, namespace, strategic-merge patches whose lists merge by `name`), no more.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import typer
import yaml

from control.endpoints import GPU_MEMORY_LABEL, GPU_TYPE_LABEL
from control.types import Workload
from deploy.triton import find_tritonserver
from model_repo_tools.profiles import ProfileSet
from tnx.errors import MissingDependencyError

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = "1.37.0"  # the newest kubernetes-validate ships schemas of
BUILDS = ["base", "overlays/gpu"]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# Lists a strategic merge patch merges by `name` (their patchMergeKey in the API); the
# overlay's patches may hold lists of objects only under these keys.
MERGE_BY_NAME = {"containers", "initContainers", "volumes", "env"}


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def merge(base: object, patch: object, key: str = "") -> object:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(base[k], v, k) if k in base else v
        return out
    if isinstance(patch, list) and any(isinstance(x, dict) for x in patch):
        assert key in MERGE_BY_NAME, f"the overlay patches list {key!r}: extend build()"
        assert isinstance(base, list)
        by_name = {x["name"]: x for x in patch}
        out_list = [
            merge(x, by_name.pop(x["name"]), key) if x["name"] in by_name else x for x in base
        ]
        return out_list + list(by_name.values())
    return patch


def build(folder: Path) -> list[dict]:
    k = kustomization(folder)
    objects: list[dict] = []
    for res in k.get("resources", []):
        path = folder / res
        objects += build(path) if path.is_dir() else copy.deepcopy(load_docs(path))
    for p in k.get("patches", []):
        for patch in load_docs(folder / p["path"]):
            ident = (patch["kind"], patch["metadata"]["name"])
            idx = [i for i, o in enumerate(objects) if (o["kind"], o["metadata"]["name"]) == ident]
            assert len(idx) == 1, f"{p['path']}: patch target {ident} not in {folder}"
            objects[idx[0]] = merge(objects[idx[0]], patch)
    if ns := k.get("namespace"):
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = ns
            for s in o.get("subjects", []):
                if s["kind"] == "ServiceAccount":
                    s["namespace"] = ns
    return objects


@pytest.fixture(scope="module", params=BUILDS)
def built(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    return request.param, build(K8S / request.param)


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workloads(objects: list[dict]) -> Iterator[dict]:
    yield from (o for o in objects if o["kind"] in ("Deployment", "StatefulSet"))


def pod_containers(w: dict) -> list[dict]:
    spec = w["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def container(w: dict, name: str) -> dict:
    return next(c for c in pod_containers(w) if c["name"] == name)


def option(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} in {args}"
    return args[args.index(flag) + 1]


def mount_of(w: dict, c: dict, path: str) -> dict:
    """The pod volume mounted at the folder holding `path`, or at `path` itself."""
    mounts = sorted(c.get("volumeMounts", []), key=lambda m: -len(m["mountPath"]))
    m = next(m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"] + "/"))
    return next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == m["name"])


# --- the files and their schemas ---


def test_every_file_belongs_to_its_kustomization() -> None:
    base = kustomization(K8S / "base")
    assert base["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert {p.name for p in (K8S / "base").glob("*.yaml")} == {"kustomization.yaml"} | set(
        base["resources"]
    )
    gpu = kustomization(K8S / "overlays/gpu")
    assert gpu["resources"] == ["../../base"]
    assert {p.name for p in (K8S / "overlays/gpu").glob("*.yaml")} == {"kustomization.yaml"} | {
        p["path"] for p in gpu["patches"]
    }


@pytest.mark.parametrize("name", kustomization(K8S / "base")["resources"])
def test_each_base_manifest_validates_strictly(name: str) -> None:
    for doc in load_docs(K8S / "base" / name):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_each_built_object_validates_strictly(built: tuple[str, list[dict]]) -> None:
    for doc in built[1]:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_strict_validation_rejects_what_kubernetes_would(built: tuple[str, list[dict]]) -> None:
    router = copy.deepcopy(one(built[1], "Deployment", "tnx-router"))
    router["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(router, VERSION, strict=True)


def test_the_validation_command_passes_on_base_files_and_the_built_overlay(tmp_path: Path) -> None:
    built_gpu = tmp_path / "overlay-gpu.yaml"
    built_gpu.write_text(yaml.safe_dump_all(build(K8S / "overlays/gpu"), sort_keys=False))
    files = [K8S / "base" / r for r in kustomization(K8S / "base")["resources"]] + [built_gpu]
    cli = Path(sys.executable).parent / "kubernetes-validate"
    proc = subprocess.run(
        [str(cli), "--strict", "-k", VERSION, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout + proc.stderr


# --- objects that refer to one another ---


def test_selectors_match_pod_labels_and_services_reach_ports(
    built: tuple[str, list[dict]],
) -> None:
    objects = built[1]
    for w in workloads(objects):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items(), w["metadata"]
    for svc in (o for o in objects if o["kind"] == "Service"):
        targets = [
            w
            for w in workloads(objects)
            if svc["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)}"
        ports = [
            p for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        ]
        for sp in svc["spec"]["ports"]:
            tp = sp["targetPort"]
            assert any(tp in (p.get("name"), p["containerPort"]) for p in ports), (svc, tp)
    for w in workloads(objects):
        for c in pod_containers(w):
            names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    assert c[probe]["httpGet"]["port"] in names, (c["name"], probe)


def test_triton_is_a_statefulset_behind_a_headless_service_ready_on_v2_health(
    built: tuple[str, list[dict]],
) -> None:
    sts = one(built[1], "StatefulSet", "triton")
    svc = one(built[1], "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    c = container(sts, "tritonserver")
    assert c["image"].startswith("nvcr.io/nvidia/tritonserver:") and c["image"].endswith("-py3")
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--model-control-mode=explicit" in c["args"]
    repo = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("--model-repository="))
    assert "persistentVolumeClaim" in mount_of(sts, c, repo)


def test_every_configmap_claim_secret_and_account_used_exists(
    built: tuple[str, list[dict]],
) -> None:
    objects = built[1]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for w in workloads(objects):
        spec = w["spec"]["template"]["spec"]
        if "serviceAccountName" in spec:
            assert ("ServiceAccount", spec["serviceAccountName"]) in names
        else:
            assert spec.get("automountServiceAccountToken") is False, w["metadata"]["name"]
        for v in spec.get("volumes", []):
            if "configMap" in v:
                cm = one(objects, "ConfigMap", v["configMap"]["name"])
                assert all(i["key"] in cm["data"] for i in v["configMap"].get("items", []))
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names
        mounted = {v["name"] for v in spec.get("volumes", [])}
        for c in pod_containers(w):
            assert {m["name"] for m in c.get("volumeMounts", [])} <= mounted
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    cm = one(objects, "ConfigMap", ref["configMapKeyRef"]["name"])
                    assert ref["configMapKeyRef"]["key"] in cm["data"]
                if "secretKeyRef" in ref:  # no Secret ships: each one is the operator's
                    assert ref["secretKeyRef"]["optional"] is True, e


def test_the_control_plane_may_read_endpointslices_and_hold_its_lease(
    built: tuple[str, list[dict]],
) -> None:
    objects = built[1]
    sa = one(objects, "Deployment", "tnx-control")["spec"]["template"]["spec"]["serviceAccountName"]
    ns = one(objects, "ServiceAccount", sa)["metadata"]["namespace"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rb in (o for o in objects if o["kind"] == "RoleBinding"):
        if {"kind": "ServiceAccount", "name": sa, "namespace": ns} not in rb["subjects"]:
            continue
        assert rb["roleRef"]["kind"] == "Role"
        role = one(objects, "Role", rb["roleRef"]["name"])
        assert role["metadata"]["namespace"] == rb["metadata"]["namespace"] == ns
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for name in rule.get("resourceNames", ["*"]):
                        granted.setdefault((f"{group}/{res}", name), set()).update(rule["verbs"])
    # Exactly what fleet discovery (list, watch) and leader election (get, create, update)
    # use: `create` cannot be limited to a name, the others are limited to the one Lease.
    lease = option(
        tnx_args(container(one(objects, "Deployment", "tnx-control"), "control")), "--lease"
    )
    assert lease == f"{ns}/tnx-control"
    assert granted == {
        ("discovery.k8s.io/endpointslices", "*"): {"list", "watch"},
        ("coordination.k8s.io/leases", "*"): {"create"},
        ("coordination.k8s.io/leases", "tnx-control"): {"get", "update"},
    }


def test_routers_scale_on_cpu(built: tuple[str, list[dict]]) -> None:
    objects = built[1]
    hpa = one(objects, "HorizontalPodAutoscaler", "tnx-router")
    ref = hpa["spec"]["scaleTargetRef"]
    router = one(objects, ref["kind"], ref["name"])
    assert "replicas" not in router["spec"]  # the autoscaler owns the count
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    for c in router["spec"]["template"]["spec"]["containers"]:
        assert "cpu" in c["resources"]["requests"]  # utilisation is a share of the request


# --- commands, and what they read ---


@pytest.fixture(scope="module")
def tnx_command() -> Any:
    from deploy.cli import _mount, app

    if not app.registered_groups:
        _mount()
    return typer.main.get_command(app)


def parse(cmd: Any, args: list[str], parent: Any = None) -> list[str]:
    """The path of the tnx command `args` names (e.g. ["router", "serve"]), once its options
    are parsed as the CLI parses them (unknown options and bad values raise)."""
    ctx = cmd.make_context(cmd.name or "tnx", list(args), parent=parent)
    if not getattr(cmd, "commands", None):  # a command, not a group (Typer vendors click)
        return []
    name, sub, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
    assert name is not None and sub is not None, args
    return [name, *parse(sub, rest, ctx)]


def tnx_args(c: dict) -> list[str]:
    assert c["command"] == ["tnx"] and c["image"].split(":")[0].endswith("tnx")
    return c["args"]


def test_every_tnx_container_runs_a_command_tnx_has(
    built: tuple[str, list[dict]], tnx_command: Any
) -> None:
    seen = []
    for w in workloads(built[1]):
        for c in pod_containers(w):
            if c["image"].startswith("nvcr.io/"):
                continue
            seen.append(parse(tnx_command, tnx_args(c)))
    assert sorted(seen) == [["control", "serve"], ["router", "serve"]]


def test_triton_flags_are_tritonservers() -> None:
    try:
        install = find_tritonserver()
    except MissingDependencyError as err:
        pytest.skip(str(err))
    out = subprocess.run(
        [*install.args(), "--help"], capture_output=True, text=True, env=install.env(), timeout=60
    )
    usage = out.stdout + out.stderr
    args = container(one(build(K8S / "base"), "StatefulSet", "triton"), "tritonserver")["args"]
    for a in args:
        assert f"\n  {a.split('=', 1)[0]} " in usage or f"\n  {a.split('=', 1)[0]}\n" in usage, a


def test_the_control_plane_discovers_the_statefulset_and_reads_what_it_mounts(
    built: tuple[str, list[dict]],
) -> None:
    objects = built[1]
    control = one(objects, "Deployment", "tnx-control")
    serve = tnx_args(container(control, "control"))
    # The fleet is the StatefulSet's headless Service, in its namespace, with a gRPC port.
    sts = one(objects, "StatefulSet", "triton")
    svc = one(objects, "Service", sts["spec"]["serviceName"])
    assert (
        option(serve, "--fleet-from")
        == f"k8s:{svc['metadata']['namespace']}/{svc['metadata']['name']}"
    )
    assert "--fleet" not in serve
    assert any(p["name"] == "grpc" for p in svc["spec"]["ports"])
    assert svc["spec"].get("publishNotReadyAddresses") is True  # live, not ready, still seen
    # Its servers' GPU type is the Service's label, and every session's model has a
    # profile of that type; their memory is a label, or Triton's metrics (GPU overlay).
    gpu_type = svc["metadata"]["labels"][GPU_TYPE_LABEL]
    memory = svc["metadata"]["labels"].get(GPU_MEMORY_LABEL)
    assert memory is None or int(memory) > 0
    assert "--gpu-type" not in serve and "--gpu-memory" not in serve
    # Two replicas under one Lease, each named by its pod; only the leader is ready, so
    # the rollout is Recreate; they share the state volume on one node.
    assert control["spec"]["replicas"] == 2 and control["spec"]["strategy"]["type"] == "Recreate"
    assert option(serve, "--identity") == "$(POD_NAME)"
    env = {e["name"]: e for e in container(control, "control")["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    [term] = control["spec"]["template"]["spec"]["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["labelSelector"]["matchLabels"].items()
        <= control["spec"]["template"]["metadata"]["labels"].items()
    )
    state = mount_of(control, container(control, "control"), option(serve, "--state"))
    claim = one(objects, "PersistentVolumeClaim", state["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The repository the control plane reads configs from is the one Triton loads from.
    repo = mount_of(control, container(control, "control"), option(serve, "--repo"))
    triton_repo = next(
        mount_of(sts, c, a.split("=", 1)[1])
        for c in pod_containers(sts)
        for a in c["args"]
        if a.startswith("--model-repository=")
    )
    assert (
        repo["persistentVolumeClaim"]["claimName"]
        == (triton_repo["persistentVolumeClaim"]["claimName"])
    )
    # Profiles and workload come from ConfigMaps and are contracts tnx accepts.
    contents = {}
    for flag in ("--profiles", "--workload"):
        path = option(serve, flag)
        vol = mount_of(control, container(control, "control"), path)
        cm = one(objects, "ConfigMap", vol["configMap"]["name"])
        contents[flag] = json.loads(cm["data"][path.rsplit("/", 1)[1]])
    profiles = ProfileSet.model_validate(contents["--profiles"])
    workload = Workload.model_validate(contents["--workload"])
    have = {(p.model, p.gpu_type) for p in profiles.profiles}
    assert all((s.model, gpu_type) in have for s in workload.sessions)


def test_routers_follow_the_control_plane_service(built: tuple[str, list[dict]]) -> None:
    objects = built[1]
    url = urlsplit(
        option(tnx_args(container(one(objects, "Deployment", "tnx-router"), "router")), "--control")
    )
    svc = one(objects, "Service", url.hostname)
    port = next(p for p in svc["spec"]["ports"] if p["port"] == url.port)
    control = one(objects, "Deployment", "tnx-control")
    c = next(
        c
        for c in control["spec"]["template"]["spec"]["containers"]
        if any(p.get("name") == port["targetPort"] for p in c["ports"])
    )
    target = next(p["containerPort"] for p in c["ports"] if p["name"] == port["targetPort"])
    assert option(tnx_args(c), "--port") == str(target)
    assert option(tnx_args(c), "--host") == "0.0.0.0"


# --- the GPU overlay ---


def test_the_gpu_overlay_gives_each_triton_one_gpu_and_reads_its_memory() -> None:
    base, gpu = build(K8S / "base"), build(K8S / "overlays/gpu")
    sts_base, sts_gpu = one(base, "StatefulSet", "triton"), one(gpu, "StatefulSet", "triton")
    limits = container(sts_gpu, "tritonserver")["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and "memory" in limits  # merged, not replaced
    assert "nvidia.com/gpu" not in container(sts_base, "tritonserver")["resources"]["limits"]
    assert sts_gpu["spec"]["template"]["spec"]["nodeSelector"]
    labels = one(gpu, "Service", "triton")["metadata"]["labels"]
    assert labels[GPU_TYPE_LABEL] != "cpu" and GPU_MEMORY_LABEL not in labels
    assert GPU_MEMORY_LABEL in one(base, "Service", "triton")["metadata"]["labels"]
    # Apart from the patched fields the overlay is the base.
    assert [(o["kind"], o["metadata"]["name"]) for o in gpu] == [
        (o["kind"], o["metadata"]["name"]) for o in base
    ]
    assert container(sts_gpu, "tritonserver")["args"] == container(sts_base, "tritonserver")["args"]
