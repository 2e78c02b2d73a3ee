"""`tnx control serve`: the control plane as a service.

The fleet is a fleet.json (`--fleet`) or discovered from a headless Service's
EndpointSlices (`--fleet-from k8s:NAMESPACE/SERVICE`, `control.k8s_discovery`). With
`--lease NAMESPACE/NAME` the replica leads only while it holds that Lease
(`control.lease_elector`) and is a standby otherwise (`control.replica`); without it,
it leads from the start.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import typer

control_app = typer.Typer(no_args_is_help=True)


def api_client(flag: str) -> Any:
    """A client of the cluster's API server: the pod's service account in a pod, else the
    kubeconfig (`$KUBECONFIG` or ~/.kube/config)."""
    from kubernetes import client, config

    from tnx.errors import UserInputError

    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_pod:
            config.load_incluster_config()
        else:
            config.load_kube_config()
    except (config.ConfigException, OSError) as err:
        where = "the pod's service account" if in_pod else "not in a pod, and no usable kubeconfig"
        raise UserInputError(f"{flag}: no Kubernetes API: {where} ({err})") from None
    return client.ApiClient()


@control_app.command("serve")
def serve(
    fleet: Path | None = typer.Option(None, "--fleet", help="fleet.json"),
    fleet_from: str | None = typer.Option(
        None,
        "--fleet-from",
        help="k8s:NAMESPACE/SERVICE: the fleet is the headless Service's EndpointSlices.",
    ),
    gpu_type: str | None = typer.Option(
        None,
        "--gpu-type",
        help="--fleet-from: GPU type of its servers (default: the Service's label tnx.dev/gpu-type).",
    ),
    gpu_memory: int | None = typer.Option(
        None,
        "--gpu-memory",
        help="--fleet-from: bytes per GPU (default: the Service's label tnx.dev/gpu-memory, else each Triton's metrics).",
    ),
    wait: float = typer.Option(
        600.0, "--wait", help="--fleet-from: seconds to wait for a first server to qualify."
    ),
    lease: str | None = typer.Option(
        None,
        "--lease",
        help="NAMESPACE/NAME of a coordination.k8s.io Lease: lead only while holding it.",
    ),
    identity: str | None = typer.Option(
        None, "--identity", help="This replica's name in the Lease (default: $POD_NAME, hostname)."
    ),
    lease_duration_s: float = typer.Option(
        15.0, "--lease-duration-s", help="--lease: a standby takes over a Lease silent this long."
    ),
    renew_deadline_s: float = typer.Option(
        10.0, "--renew-deadline-s", help="--lease: a leader not renewed this long steps down."
    ),
    retry_period_s: float = typer.Option(
        2.0, "--retry-period-s", help="--lease: seconds between two reads (or renewals)."
    ),
    repo: Path = typer.Option(..., "--repo", help="The fleet's model repository."),
    profiles: Path = typer.Option(..., "--profiles", help="profiles.json"),
    workload: Path = typer.Option(..., "--workload", help="workload.json (first start)"),
    router: list[str] = typer.Option(
        [],
        "--router",
        help="Router URL to read rates from (routers with --control register).",
    ),
    epoch_s: float = typer.Option(30.0, "--epoch-s", help="Seconds between re-plans."),
    window_s: float = typer.Option(5.0, "--window-s", help="Seconds of arrivals per rate."),
    state: Path = typer.Option(Path("tnx-control.sqlite"), "--state", help="SQLite state."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8100, "--port"),
    policy: str = typer.Option("tnx", "--policy"),
    token: str | None = typer.Option(None, "--token", help="Admin token (or TNX_ADMIN_TOKEN)."),
) -> None:
    """Plan, actuate on Triton and re-plan every epoch (sooner on rate changes)."""
    import asyncio

    import uvicorn

    from control.endpoints import parse_fleet_from
    from control.lease_elector import AlwaysLeader, LeaseElector
    from control.replica import Replica
    from control.service import ControlConfig
    from control.term import Discovered, TermSpec, start_term
    from control.types import Workload
    from model_repo_tools.fleet import Fleet
    from model_repo_tools.profiles import ProfileSet
    from tnx.errors import UserInputError

    if epoch_s <= 0 or window_s <= 0:
        raise UserInputError(f"--epoch-s {epoch_s} / --window-s {window_s}: must be positive")
    if not repo.is_dir():
        raise UserInputError(f"--repo {repo}: not a directory")
    if (fleet is None) == (fleet_from is None):
        raise UserInputError(
            "--fleet / --fleet-from: give exactly one (a fleet.json, or k8s:NS/SVC)"
        )
    if fleet_from is None and (gpu_type is not None or gpu_memory is not None):
        raise UserInputError(
            "--gpu-type / --gpu-memory: only with --fleet-from (fleet.json has them)"
        )
    if gpu_type is not None and not gpu_type.strip():
        raise UserInputError("--gpu-type must not be empty")
    if gpu_memory is not None and gpu_memory <= 0:
        raise UserInputError(f"--gpu-memory {gpu_memory}: must be positive")
    if wait < 0:
        raise UserInputError(f"--wait {wait}: must not be negative")
    client = None
    source: Fleet | Discovered
    if fleet_from is not None:
        service = parse_fleet_from(fleet_from)
        client = api_client("--fleet-from")
        source = Discovered(client, service, gpu_type and gpu_type.strip(), gpu_memory, wait)
    else:
        assert fleet is not None
        source = Fleet.load(fleet)
    spec = TermSpec(
        repo,
        ProfileSet.load(profiles),
        Workload.load(workload),
        state,
        source,
        routers=router,
        config=ControlConfig(epoch_s=epoch_s, window_s=window_s, policy=policy),
        token=token or os.environ.get("TNX_ADMIN_TOKEN"),
    )
    me = identity or os.environ.get("POD_NAME") or socket.gethostname()
    if lease is not None:
        namespace, _, name = lease.partition("/")
        if not namespace or not name or "/" in name:
            raise UserInputError(
                f"--lease {lease!r}: expected NAMESPACE/NAME (e.g. tnx/tnx-control)"
            )
        elector: Any = LeaseElector(
            client or api_client("--lease"),
            namespace,
            name,
            me,
            lease_duration_s,
            renew_deadline_s,
            retry_period_s,
        )
    else:
        elector = AlwaysLeader()
    replica = Replica(
        elector,
        lambda: start_term(spec),
        identity=me,
        hold_off_s=lease_duration_s,
        first_term_required=lease is None,
    )

    async def run() -> None:
        # Started before serving, so that a single replica that cannot start says why in one
        # line; the server's lifespan stops it (and releases the Lease) on SIGTERM.
        await replica.startup()
        typer.echo(
            f"tnx control plane on http://{host}:{port} (state {state}"
            + (f", lease {lease} as {me})" if lease else ")"),
            err=True,
        )
        config = uvicorn.Config(replica, host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()

    asyncio.run(run())
