"""Fleet discovery from EndpointSlices: slices (the `kubernetes` client's own models, made
from the API's JSON) → servers, the membership diff, the list-and-watch against an API
server speaking the real REST JSON (`k8s_api`), and the control plane following it
(servers join, leave as failed servers, fail back, are forgotten)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.clock import ManualClock
from control.endpoints import ServiceRef, Target, parse_fleet_from, service_label, targets
from control.k8s_discovery import FleetDiscovery, SliceWatch
from control.membership import diff
from control.qualify import Reading
from control.service import ControlConfig, ControlPlane
from control.store import Store
from control.types import Session
from model_repo_tools.fleet import Fleet, FleetGpu
from tests.control.k8s_api import FakeApi, client_for, endpoint, endpoint_slice, fake_api
from tests.control.test_failover_logic import FakeActuator, FakeProber, _profiles, _settled, _used
from tnx.errors import FleetError, UserInputError

SVC = ServiceRef("tnx", "triton")


def models(*bodies: dict) -> list:
    """EndpointSlices as the client deserializes them from the API's JSON."""
    from kubernetes import client

    api = client.ApiClient()
    return [api.deserialize(json.dumps(b), "V1EndpointSlice", "application/json") for b in bodies]


# --- slices → servers ---


def test_statefulset_pods_are_named_by_their_stable_dns_names() -> None:
    s = endpoint_slice(
        "triton-abc",
        "triton",
        [
            endpoint("10.0.0.5", hostname="triton-0"),
            endpoint("10.0.0.6", hostname="triton-1", ready=False),  # live, not ready: counts
            endpoint("10.0.0.7", hostname="triton-2", terminating=True),  # being deleted
        ],
    )
    got = targets(models(s), SVC)
    assert got == {
        "triton-0.triton.tnx.svc:8001": Target("triton-0.triton.tnx.svc:8001", "triton-0/0", "triton-0"),
        "triton-1.triton.tnx.svc:8001": Target("triton-1.triton.tnx.svc:8001", "triton-1/0", "triton-1"),
    }  # fmt: skip


def test_other_pods_are_named_by_address_and_dual_stack_pods_once() -> None:
    v4 = endpoint_slice("t-v4", "triton", [endpoint("10.0.0.5", pod="triton-7d9f-x2")])
    v6 = endpoint_slice(
        "t-v6", "triton", [endpoint("fd00::5", pod="triton-7d9f-x2")], address_type="IPv6"
    )
    only_v6 = endpoint_slice("t-6", "triton", [endpoint("fd00::9")], address_type="IPv6")
    assert targets(models(v4, v6), SVC) == {
        "10.0.0.5:8001": Target("10.0.0.5:8001", "triton-7d9f-x2/0", "triton-7d9f-x2")
    }
    assert targets(models(only_v6), SVC) == {
        "[fd00::9]:8001": Target("[fd00::9]:8001", "[fd00::9]:8001/0", None)
    }


def test_slices_without_a_grpc_port_or_endpoints_name_no_server() -> None:
    no_port = endpoint_slice("a", "triton", [endpoint("10.0.0.5")])
    no_port["ports"] = [p for p in no_port["ports"] if p["name"] != "grpc"]
    empty = endpoint_slice("b", "triton", [])
    del empty["endpoints"]
    assert targets(models(no_port, empty), SVC) == {}


def test_the_gpu_type_label_of_the_service_is_read_from_its_slices() -> None:
    labelled = endpoint_slice("a", "triton", [], labels={"tnx.dev/gpu-type": "h200"})
    plain = endpoint_slice("b", "triton", [])
    assert service_label(models(labelled, plain), "tnx.dev/gpu-type") == "h200"
    assert service_label(models(plain), "tnx.dev/gpu-type") is None


def test_fleet_from_names_a_namespace_and_a_service() -> None:
    assert parse_fleet_from("k8s:tnx/triton") == SVC
    for bad in ("tnx/triton", "k8s:triton", "k8s:tnx/Triton", "k8s:/triton", "file:tnx/triton"):
        with pytest.raises(UserInputError, match="--fleet-from"):
            parse_fleet_from(bad)


def test_membership_diff() -> None:
    a, b, c = (Target(f"{n}:8001", f"{n}/0") for n in "abc")
    named = {t.server: t for t in (b, c)}
    change = diff({"a:8001", "b:8001"}, {"d:8001": 0.0, "c:8001": 0.0}, named, now=600.0)
    assert change.candidates == (c,)  # c is back (or new): it must qualify first
    assert change.gone == ("a:8001",)
    assert change.forget == ("d:8001",)  # gone 600 s; c is named again, not forgotten
    assert not diff({"b:8001"}, {}, {"b:8001": b}, 0.0)


# --- list and watch against the API ---


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as a:
        yield a


class Seen:
    def __init__(self) -> None:
        self.calls: list[set[str]] = []
        self.changed = threading.Event()

    def __call__(self, slices: list) -> None:
        self.calls.append(set(targets(slices, SVC)))
        self.changed.set()

    def wait_for(self, servers: set[str], timeout_s: float = 10.0) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while not (self.calls and self.calls[-1] == servers):
            assert time.monotonic() < deadline, f"last seen {self.calls[-1:]}, not {servers}"
            self.changed.wait(0.05)
            self.changed.clear()


@pytest.mark.parametrize("gone_as_status", [False, True])
def test_the_watch_follows_added_modified_and_deleted_slices(
    api: FakeApi, gone_as_status: bool
) -> None:
    api.gone_as_status = gone_as_status
    url = api.door()
    api.put_slice(endpoint_slice("s1", "triton", [endpoint("10.0.0.1", hostname="triton-0")]))
    api.put_slice(endpoint_slice("other", "redis", [endpoint("10.0.0.9", hostname="redis-0")]))
    seen = Seen()
    watch = SliceWatch(client_for(url), SVC, seen, watch_timeout_s=1)
    watch.start()
    try:
        t0, t1 = "triton-0.triton.tnx.svc:8001", "triton-1.triton.tnx.svc:8001"
        seen.wait_for({t0})
        api.put_slice(
            endpoint_slice(
                "s1",
                "triton",
                [
                    endpoint("10.0.0.1", hostname="triton-0"),
                    endpoint("10.0.0.2", hostname="triton-1"),
                ],
            )
        )
        seen.wait_for({t0, t1})
        api.put_slice(endpoint_slice("s2", "triton", [endpoint("10.0.0.3", hostname="triton-2")]))
        seen.wait_for({t0, t1, "triton-2.triton.tnx.svc:8001"})
        api.delete_slice("tnx", "s1")
        seen.wait_for({"triton-2.triton.tnx.svc:8001"})
        # The server ends each watch after timeoutSeconds; the watch resumes from the last
        # version it saw, listing only once.
        import time

        time.sleep(1.5)
        lists = [p for m, p in api.requests if "endpointslices" in p and "watch=" not in p]
        watches = [p for m, p in api.requests if "watch=true" in p]
        assert len(lists) == 1 and len(watches) >= 2
        selector = "labelSelector=kubernetes.io/service-name%3Dtriton"
        assert all(selector in p for p in lists + watches)
        # History compacted: a watch from an old version gets 410 Gone and lists again.
        api.compact()
        api.put_slice(endpoint_slice("s3", "triton", [endpoint("10.0.0.4", hostname="triton-3")]))
        seen.wait_for({"triton-2.triton.tnx.svc:8001", "triton-3.triton.tnx.svc:8001"})
        lists = [p for m, p in api.requests if "endpointslices" in p and "watch=" not in p]
        assert len(lists) == 2
    finally:
        watch.stop()


def test_an_unreachable_api_server_is_asked_again(api: FakeApi) -> None:
    url = api.door()
    api.shut.add(int(url.rsplit(":", 1)[1]))
    api.put_slice(endpoint_slice("s1", "triton", [endpoint("10.0.0.1", hostname="triton-0")]))
    seen = Seen()
    watch = SliceWatch(client_for(url), SVC, seen, watch_timeout_s=1, retry_s=0.1)
    watch.start()
    try:
        import time

        time.sleep(0.3)
        assert seen.calls == []
        api.shut.clear()
        seen.wait_for({"triton-0.triton.tnx.svc:8001"})
    finally:
        watch.stop()


# --- the control plane following discovery ---


def reading(server: str, live: bool = True, explicit: bool = True) -> Reading:
    return Reading(server, None, live, explicit, (2**34,))


class Servers:
    """What each server answers when discovery asks it (`control.qualify.read_server`)."""

    def __init__(self) -> None:
        self.answers: dict[str, Reading] = {}

    def __call__(self, server: str) -> Reading:
        return self.answers.get(server) or Reading(server, unreachable="connection refused")


def control_plane(tmp_path: Path, server: str) -> tuple[ControlPlane, ManualClock]:
    """One server, faked probes and actuation, a session two servers' worth of rate."""
    clock = ManualClock()
    cp = ControlPlane(
        Fleet(gpus=[FleetGpu(id="triton-0/0", gpu_type="cpu", memory_bytes=2**34, server=server)]),
        tmp_path,
        _profiles(),
        Store(":memory:"),
        config=ControlConfig(probe_s=3600, rejoin_probes=2),
        actuator=FakeActuator(),  # type: ignore[arg-type]
        prober=FakeProber(),  # type: ignore[arg-type]
        clock=clock,
    )
    cp.store.put_session(Session(id="s", model="m", slo_ms=100, rate=2000))
    return cp, clock


def test_servers_join_leave_as_failed_servers_fail_back_and_are_forgotten(tmp_path: Path) -> None:
    async def scenario() -> None:
        cp, clock = control_plane(tmp_path, "triton-0.triton.tnx.svc:8001")
        servers = Servers()
        disc = FleetDiscovery(SVC, "cpu", None, read=servers, now=clock.now, forget_after_s=60)
        disc.bind()
        # triton-0 (the fleet's h:0 in _control) is named; so is a new server, not live yet.
        new = endpoint("10.0.0.9", hostname="triton-9")
        named = [endpoint("10.0.0.1", hostname="triton-0"), new]
        disc._take(models(endpoint_slice("s", "triton", named)))
        await cp.start()
        try:
            t9 = "triton-9.triton.tnx.svc:8001"
            servers.answers[t9] = reading(t9, explicit=False)
            await disc.sync(cp)
            assert "explicit" in disc.problems[t9] and len(cp.fleet.gpus) == 1
            servers.answers[t9] = reading(t9)
            await disc.sync(cp)  # asked again: it qualifies now, and is planned at once
            assert {g.id for g in cp.fleet.gpus} == {"triton-0/0", "triton-9/0"}
            await _settled(lambda: cp.current is not None and "joined" in cp.current.reason)
            assert _used(cp) == {"triton-0/0", "triton-9/0"}
            # triton-0 leaves the slices: down and failed over, as a failed server.
            disc._take(models(endpoint_slice("s", "triton", [new])))
            await disc.sync(cp)
            assert [g.id for g in cp.fleet.gpus] == ["triton-9/0"]
            assert cp.health.down() == ["triton-0.triton.tnx.svc:8001"]
            await cp.tick()
            assert cp.current.reason.startswith("failover") and _used(cp) == {"triton-9/0"}
            # Back under its name: it qualifies again, then fails back after healthy probes.
            t0 = "triton-0.triton.tnx.svc:8001"
            servers.answers[t0] = reading(t0)
            disc._take(models(endpoint_slice("s", "triton", named)))
            await disc.sync(cp)
            assert {g.id for g in cp.fleet.gpus} == {"triton-0/0", "triton-9/0"}
            assert await cp.probe_fleet() == []
            assert await cp.probe_fleet() == [(t0, "up")]
            await cp.tick()
            assert cp.current.reason.startswith("failback")
            # Gone for good (a scale-down): forgotten after forget_after_s, outage over.
            disc._take(models(endpoint_slice("s", "triton", [new])))
            await disc.sync(cp)
            assert cp.health.down() == [t0]
            await clock.advance(60)
            await disc.sync(cp)
            assert cp.health.down() == [] and disc.departed == {}
        finally:
            await cp.stop()

    asyncio.run(scenario())


def test_the_first_fleet_waits_for_servers_to_qualify(api: FakeApi) -> None:
    async def scenario() -> None:
        servers = Servers()
        disc = FleetDiscovery(SVC, None, None, retry_s=0.05, read=servers)
        disc.bind()
        slices = [
            endpoint("10.0.0.1", hostname="triton-0"),
            endpoint("10.0.0.2", hostname="triton-1"),
        ]
        disc.on_slices(
            models(endpoint_slice("s", "triton", slices, labels={"tnx.dev/gpu-type": "h200"}))
        )
        t0, t1 = "triton-0.triton.tnx.svc:8001", "triton-1.triton.tnx.svc:8001"
        servers.answers[t0] = reading(t0)
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, lambda: servers.answers.update({t1: reading(t1)}))
        fleet = await disc.initial(wait_s=5)
        assert [(g.id, g.gpu_type, g.server) for g in fleet.gpus] == [
            ("triton-0/0", "h200", t0),
            ("triton-1/0", "h200", t1),
        ]
        # One never qualifies: after the wait, the fleet is those that do.
        servers.answers[t1] = reading(t1, live=False)
        disc2 = FleetDiscovery(SVC, "cpu", 2**30, retry_s=0.05, read=servers)
        disc2.bind()
        disc2.on_slices(models(endpoint_slice("s", "triton", slices)))
        fleet = await disc2.initial(wait_s=0.3)
        assert [(g.id, g.memory_bytes) for g in fleet.gpus] == [("triton-0/0", 2**30)]
        # None does: one line naming each server and why.
        servers.answers.clear()
        disc3 = FleetDiscovery(SVC, "cpu", None, retry_s=0.05, read=servers)
        disc3.bind()
        disc3.on_slices(models(endpoint_slice("s", "triton", slices)))
        with pytest.raises(
            FleetError, match=r"no server qualifies .*triton-1.triton.tnx.svc:8001: not reachable"
        ):
            await disc3.initial(wait_s=0.2)

    asyncio.run(scenario())


def test_stopping_ends_a_watch_that_waits_for_events(api: FakeApi) -> None:
    import time

    api.put_slice(endpoint_slice("s1", "triton", [endpoint("10.0.0.1", hostname="triton-0")]))
    seen = Seen()
    watch = SliceWatch(client_for(api.door()), SVC, seen, watch_timeout_s=300)
    watch.start()
    seen.wait_for({"triton-0.triton.tnx.svc:8001"})
    time.sleep(0.2)  # blocked on the stream, which has nothing to say for 300 s
    started = time.monotonic()
    watch.stop()
    assert watch._thread is not None and not watch._thread.is_alive()
    assert time.monotonic() - started < 2.0
