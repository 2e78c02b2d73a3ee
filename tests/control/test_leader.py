"""Leader election among control-plane replicas: the Lease decision (pure, manual times), the
elector against a Kubernetes API speaking the real REST JSON (`k8s_api`) through the real
`kubernetes` client, and replicas handing the control plane over."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.clock import ManualClock
from control.leader import (
    Action,
    LeaseRecord,
    Seen,
    check_timing,
    claim,
    decide,
    held,
    observe,
    released,
)
from control.lease_elector import AlwaysLeader, LeaseElector, micro_time
from control.replica import Replica
from tests.control.k8s_api import FakeApi, client_for, fake_api
from tests.waiting import until
from tnx.errors import FleetError

T0 = dt.datetime(2026, 12, 3, 7, 0, 0, tzinfo=dt.UTC)


def lease_json(holder: str | None, renew: str = "2026-12-03T07:00:00.000000Z") -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "tnx-control", "namespace": "tnx", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-12-03T06:00:00.000000Z",
            "renewTime": renew,
            "leaseTransitions": 3,
        },
    }


def as_lease(body: dict):
    """The client's own V1Lease, deserialized from the API's JSON as the client does."""
    import json

    from kubernetes import client

    return client.ApiClient().deserialize(json.dumps(body), "V1Lease", "application/json")


# --- the decision ---


def test_a_lease_record_reads_the_clients_v1lease() -> None:
    rec = LeaseRecord.of(as_lease(lease_json("tnx-control-a")))
    assert rec.holder == "tnx-control-a" and rec.duration_s == 15.0 and rec.transitions == 3
    assert rec.renew_time == T0 and rec.version == "7"
    assert LeaseRecord.of(as_lease(lease_json(None))).holder is None


def test_decide_acquires_renews_waits_and_takes_over() -> None:
    assert decide(None, "a", 0.0).action is Action.ACQUIRE
    rec = LeaseRecord.of(as_lease(lease_json("b")))
    seen = observe(None, rec, now=100.0)
    assert decide(seen, "b", 100.0).action is Action.RENEW
    d = decide(seen, "a", 114.9)
    assert (d.action, d.holder, d.expires_at) == (Action.WAIT, "b", 115.0)
    # Unchanged for a full lease duration by the observer's clock: b stopped renewing.
    assert decide(seen, "a", 115.0).action is Action.TAKE_OVER
    # A renewal (a new renewTime) restarts the count, whatever the clocks say.
    renewed = LeaseRecord.of(as_lease(lease_json("b", "2026-12-03T07:00:10.000000Z")))
    seen2 = observe(seen, renewed, now=114.0)
    assert seen2 is not None and seen2.at == 114.0
    assert decide(seen2, "a", 128.9).action is Action.WAIT
    # Reading the same record again (another version number only) is no renewal.
    again = observe(seen2, LeaseRecord.of(as_lease({**lease_json("b", "2026-12-03T07:00:10.000000Z"), "metadata": {"name": "x", "resourceVersion": "9"}})), now=120.0)  # fmt: skip
    assert again is not None and again.at == 114.0 and again.record.version == "9"
    # Released (no holder): taken at once.
    assert decide(Seen(released(renewed, T0), 130.0), "a", 130.0).action is Action.TAKE_OVER


def test_a_replica_that_just_started_waits_a_full_duration_whatever_renew_time_says() -> None:
    # renewTime an hour old by this node's clock: the holder's clock may be off; client-go
    # waits a lease duration from its own first sight, and so does tnx.
    seen = observe(None, LeaseRecord("b", 15.0, T0 - dt.timedelta(hours=1)), now=5.0)
    assert decide(seen, "a", 19.9).action is Action.WAIT
    assert decide(seen, "a", 20.0).action is Action.TAKE_OVER


def test_claims_count_transitions_and_keep_the_acquire_time_on_renewal() -> None:
    first = claim(None, "a", 15.0, T0)
    assert (first.holder, first.transitions, first.acquire_time) == ("a", 0, T0)
    later = T0 + dt.timedelta(seconds=5)
    assert claim(first, "a", 15.0, later).acquire_time == T0  # a renewal
    taken = claim(first, "b", 15.0, later)
    assert (taken.holder, taken.transitions, taken.acquire_time) == ("b", 1, later)
    gone = released(taken, later)
    assert gone.holder is None and gone.duration_s == 1.0 and gone.transitions == 1


def test_a_leader_acts_only_within_its_renew_deadline() -> None:
    assert held(10.0, 19.9, 10.0) and not held(10.0, 20.0, 10.0) and not held(None, 0.0, 10.0)
    assert check_timing(15, 10, 2) is None
    assert "renew deadline" in (check_timing(10, 10, 2) or "")
    assert "retry period" in (check_timing(15, 10, 10) or "")


def test_micro_time_always_has_six_fraction_digits() -> None:
    assert micro_time(T0).isoformat() == "2026-12-03T07:00:00.000001+00:00"
    t = T0.replace(microsecond=250)
    assert micro_time(t) is t


# --- the elector against the API ---


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as a:
        yield a


def elector(url: str, name: str, clock: ManualClock, **kw: float) -> LeaseElector:
    return LeaseElector(
        client_for(url),
        "tnx",
        "tnx-control",
        name,
        clock=clock,
        wall=lambda: T0 + dt.timedelta(seconds=clock.now()),
        **kw,
    )


def test_electors_hand_the_lease_over_when_the_holder_stops_renewing(api: FakeApi) -> None:
    async def scenario() -> None:
        url, clock = api.door(), ManualClock()
        a, b = elector(url, "a", clock), elector(url, "b", clock)
        assert await a.step() is Action.ACQUIRE
        assert await b.step() is Action.WAIT and b.holder == "a"
        lease = api.lease("tnx", "tnx-control")
        assert lease is not None and lease["spec"]["holderIdentity"] == "a"
        assert lease["spec"]["renewTime"] == "2026-12-03T07:00:00.000001+00:00"
        await clock.advance(10)
        assert await a.step() is Action.RENEW
        await clock.advance(5)
        assert await b.step() is Action.WAIT  # renewed at 10: b saw the change at 15
        # a stops renewing (it hung, or crashed without releasing).
        await clock.advance(14.9)
        assert await b.step() is Action.WAIT
        await clock.advance(0.1)
        assert await b.step() is Action.TAKE_OVER
        lease = api.lease("tnx", "tnx-control")
        assert lease is not None
        assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("b", 1)
        # a comes back: it reads b's Lease and waits.
        assert await a.step() is Action.WAIT and a.holder == "b"

    asyncio.run(scenario())


def test_two_replicas_taking_over_at_once_cannot_both_win(api: FakeApi) -> None:
    async def scenario() -> None:
        from kubernetes.client import ApiException

        url, clock = api.door(), ManualClock()
        old, a, b = elector(url, "old", clock), elector(url, "a", clock), elector(url, "b", clock)
        assert await old.step() is Action.ACQUIRE
        stale = a._read()
        assert stale is not None and b._read() == stale
        # Both read the same record and claim it; the write is conditional on its
        # resourceVersion, so the API server refuses the second (409 Conflict).
        a._write(claim(stale, "a", 15.0, micro_time(T0)), create=False)
        with pytest.raises(ApiException) as err:
            b._write(claim(stale, "b", 15.0, micro_time(T0)), create=False)
        assert err.value.status == 409
        # In the loop: b decides from its stale read, its write is refused, it tries again.
        b._read = lambda: stale  # type: ignore[method-assign]
        b._seen = Seen(stale, -100.0)
        assert await b.step() is None and b.holder == "old"
        del b._read
        assert await b.step() is Action.WAIT and b.holder == "a"
        # Creating a Lease that exists is refused too (409 AlreadyExists).
        with pytest.raises(ApiException) as err:
            b._write(claim(None, "b", 15.0, micro_time(T0)), create=True)
        assert err.value.status == 409

    asyncio.run(scenario())


def test_a_released_lease_is_taken_at_the_next_read(api: FakeApi) -> None:
    async def scenario() -> None:
        url, clock = api.door(), ManualClock()
        a, b = elector(url, "a", clock), elector(url, "b", clock)
        await a.step()
        a.leader = True
        await b.step()
        await a.release()
        lease = api.lease("tnx", "tnx-control")
        assert lease is not None and lease["spec"].get("holderIdentity") is None
        assert await b.step() is Action.TAKE_OVER  # no lease duration to wait

    asyncio.run(scenario())


# --- replicas ---


class FakeTerm:
    """What a leader runs; records whether it is running."""

    running: list[str] = []

    def __init__(self, name: str) -> None:
        self.name = name
        FakeTerm.running.append(name)

    async def app(self, scope, receive, send) -> None:
        body = b'{"revision": 1}'
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def stop(self) -> None:
        FakeTerm.running.remove(self.name)


def test_a_standby_serves_no_plan_and_takes_over_when_the_leader_is_cut_off(
    api: FakeApi,
) -> None:
    """Real time, short timings: the leader's door to the API shuts (a partition); it
    steps down within its renew deadline, before the standby takes over."""

    async def scenario() -> None:
        FakeTerm.running = []
        doors = {n: api.door() for n in ("a", "b")}
        timing = {"duration_s": 2.0, "renew_deadline_s": 1.2, "retry_s": 0.2}
        replicas = {}
        for n in ("a", "b"):
            el = LeaseElector(client_for(doors[n]), "tnx", "tnx-control", n, **timing)

            async def start(n: str = n) -> FakeTerm:
                return FakeTerm(n)

            replicas[n] = Replica(el, start, identity=n, hold_off_s=2.0)
        await replicas["a"].startup()
        await until(lambda: FakeTerm.running == ["a"], 10.0)
        await replicas["b"].startup()
        try:
            await asyncio.sleep(0.5)
            assert FakeTerm.running == ["a"]
            transport = httpx.ASGITransport(app=replicas["b"])
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                r = await http.get("/v1/plan?router=http://r:8000")
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
                assert r.json()["reason"] == "standby" and r.json()["leader"] == "a"
                assert (await http.get("/healthz")).status_code == 503
                assert (await http.get("/metrics")).status_code == 200
            api.shut.add(int(doors["a"].rsplit(":", 1)[1]))
            loop = asyncio.get_running_loop()
            cut = loop.time()
            await until(lambda: FakeTerm.running == [], 10.0)  # a stepped down, b not yet in
            stepped = loop.time() - cut
            await until(lambda: FakeTerm.running == ["b"], 10.0)
            took = loop.time() - cut
            # a stops within its renew deadline; b waits out the lease duration from the
            # last renewal it saw (a renewed at most one retry period before the cut).
            assert stepped < 1.2 + 0.5 and took >= 2.0 - 0.5
            assert replicas["b"].terms == 1 and not replicas["a"].elector.leader
            transport = httpx.ASGITransport(app=replicas["a"])
            async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
                assert (await http.get("/v1/plan")).json()["reason"] == "standby"
        finally:
            for r in replicas.values():
                await r.shutdown()
        assert FakeTerm.running == []
        lease = api.lease("tnx", "tnx-control")
        assert lease is not None and lease["spec"].get("holderIdentity") is None  # released

    asyncio.run(scenario())


def test_a_single_replica_fails_its_start_when_its_term_cannot_start() -> None:
    async def scenario() -> None:
        async def start() -> FakeTerm:
            raise FleetError("--fleet-from k8s:tnx/triton: no server qualifies after 600 s")

        replica = Replica(AlwaysLeader(), start, first_term_required=True)
        with pytest.raises(FleetError, match="no server qualifies"):
            await replica.startup()
        assert replica.term is None

    asyncio.run(scenario())


def test_a_leader_whose_term_cannot_start_lets_another_replica_lead(api: FakeApi) -> None:
    async def scenario() -> None:
        FakeTerm.running = []
        url = api.door()
        timing = {"duration_s": 2.0, "renew_deadline_s": 1.2, "retry_s": 0.2}
        tries = {"a": 0, "b": 0}

        def starter(n: str):
            async def start() -> FakeTerm:
                tries[n] += 1
                if n == "a":  # a cannot start (say, its node cannot reach the servers)
                    raise FleetError("no server qualifies")
                return FakeTerm(n)

            return start

        a = Replica(LeaseElector(client_for(url), "tnx", "tnx-control", "a", **timing), starter("a"), "a", hold_off_s=5.0)  # fmt: skip
        b = Replica(LeaseElector(client_for(url), "tnx", "tnx-control", "b", **timing), starter("b"), "b", hold_off_s=5.0)  # fmt: skip
        await a.startup()
        await until(lambda: tries["a"] == 1, 10.0)
        await b.startup()
        try:
            # a released the Lease and sits out: b takes it at its next read, and leads.
            await until(lambda: FakeTerm.running == ["b"], 5.0)
            assert tries["a"] == 1 and not a.elector.leader and a.term is None
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(scenario())


# --- the invariant ---


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0]) | st.floats(0.0, 16.0),
            st.sampled_from("aabbc"),  # a third replica, less often: more a/b interleavings
            st.sampled_from(["step", "step", "read", "write", "release"]),
        ),
        max_size=100,
    )
)
def test_no_two_replicas_ever_act_as_leader_at_once(events: list[tuple[float, str, str]]) -> None:
    """Any interleaving of steps (a read and its write), reads whose conditional write
    lands later or never, and releases by three replicas: a replica acts from the moment
    its write lands until its renew deadline counted from the read it decided on (or
    until it releases), and no two replicas' acting times overlap."""
    duration_s, deadline_s = 15.0, 10.0
    lease: LeaseRecord | None = None
    version = 0
    seen: dict[str, Seen | None] = dict.fromkeys("abc")
    pending: dict[str, tuple[float, LeaseRecord | None, LeaseRecord] | None] = dict.fromkeys("abc")
    acting: list[tuple[str, float, float]] = []  # (replica, from, until)
    now = 0.0

    def stored(rec: LeaseRecord) -> LeaseRecord:
        nonlocal version
        version += 1
        return LeaseRecord(rec.holder, rec.duration_s, rec.renew_time, rec.acquire_time, rec.transitions, str(version))  # fmt: skip

    for step, replica, kind in events:
        now += step
        if kind in ("read", "step"):
            seen[replica] = observe(seen[replica], lease, now)
            d = decide(seen[replica], replica, now)
            pending[replica] = None
            if d.action is not Action.WAIT:
                prev = seen[replica].record if seen[replica] else None  # type: ignore[union-attr]
                wall = T0 + dt.timedelta(seconds=now)
                pending[replica] = (now, prev, claim(prev, replica, duration_s, wall))
        if kind in ("write", "step") and (p := pending[replica]) is not None:
            read_at, prev, new = p
            pending[replica] = None
            if (prev is None) != (lease is None) or (prev and prev.version != lease.version):  # type: ignore[union-attr]
                continue  # 409: another replica wrote since this one read
            lease = stored(new)
            seen[replica] = observe(seen[replica], lease, now)
            if now < read_at + deadline_s:
                acting.append((replica, now, read_at + deadline_s))
        elif kind == "release" and lease is not None and lease.holder == replica:
            # It stops acting first, then writes the release.
            acting[:] = [(r, s, min(e, now) if r == replica else e) for r, s, e in acting]
            lease = stored(released(lease, T0 + dt.timedelta(seconds=now)))
    for i, (r1, s1, e1) in enumerate(acting):
        for r2, s2, e2 in acting[i + 1 :]:
            if r1 != r2 and s1 < e1 and s2 < e2:
                assert e1 <= s2 or e2 <= s1, (r1, s1, e1, r2, s2, e2)
