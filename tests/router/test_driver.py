"""router.driver: the asyncio driver over a fake backend, on a virtual clock and on real time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from router.backend import BatchRejectedError
from router.clock import LoopClock, VirtualClock
from router.driver import AsyncRouter, BatchEnded, batch_timeout_ms
from router.policy import BatchPolicy
from router.testing import FakeBackend, curve_latency, curves, one_gpu_policy, plan
from router.types import Answered, Dispatch, Dropped, Request


def _router(
    policy: BatchPolicy | None = None, scale: float = 1.0, **kw: object
) -> tuple[AsyncRouter, VirtualClock, FakeBackend]:
    clock = VirtualClock()
    backend = FakeBackend(clock, curve_latency(curves(), scale=scale))
    router = AsyncRouter(policy or one_gpu_policy(), backend, clock=clock, **kw)  # type: ignore[arg-type]
    return router, clock, backend


def _shared() -> BatchPolicy:
    return BatchPolicy(
        plan(("g0", 20.0, [("s", "m", 4, 50.0)]), ("g1", 20.0, [("s", "m", 4, 50.0)])),
        curves(),
    )


async def test_requests_are_batched_and_answered_with_their_slice() -> None:
    router, clock, backend = _router()
    futs = [router.submit(router.request("s", payload=i)) for i in range(5)]
    await clock.run()
    outs = [f.result() for f in futs]
    assert all(isinstance(o, Answered) for o in outs)
    assert [o.result for o in outs] == [("g0", i) for i in range(5)]  # type: ignore[union-attr]
    assert [ids for _, _, ids in backend.calls] == [[0], [1, 2, 3, 4]]
    assert outs[4].finished == pytest.approx(5.0 + 8.0)  # type: ignore[union-attr]
    assert router.pending() == 0


async def test_unknown_session_resolves_at_once() -> None:
    router, _, _ = _router()
    out = await router.submit(router.request("nope"))
    assert isinstance(out, Dropped) and out.reason == "no_session"


async def test_doomed_request_is_answered_by_the_timer() -> None:
    router, clock, _ = _router(one_gpu_policy(slo=12.0))
    first = router.submit(router.request("s"))
    late = router.submit(router.request("s"))  # waits 5 ms, then l(1)=5: fits (10 <= 12)
    doomed = router.submit(Request("x", "s", 0.0, 9.0))  # must start by 4: GPU busy till 5
    await clock.run()
    assert isinstance(first.result(), Answered) and isinstance(late.result(), Answered)
    out = doomed.result()
    assert isinstance(out, Dropped) and out.reason == "deadline" and out.at == pytest.approx(4.0)


async def test_backend_error_marks_gpu_down_and_rehomes() -> None:
    events: list[object] = []
    router, clock, backend = _router(_shared(), on_event=lambda now, e: events.append(e))
    backend.fail["g0"] = ConnectionError("unreachable")
    futs = [router.submit(router.request("s", payload=i)) for i in range(3)]
    await clock.run()
    outs = [f.result() for f in futs]
    assert all(isinstance(o, Answered) and o.gpu == "g1" for o in outs), outs
    assert not router.policy.is_up("g0")
    ended = [e for e in events if isinstance(e, BatchEnded)]
    assert ended[0].status == "failed" and "unreachable" in ended[0].error


async def test_backend_error_without_another_gpu_drops_server_down() -> None:
    router, clock, backend = _router()
    backend.fail["g0"] = ConnectionError("refused")
    futs = [router.submit(router.request("s")) for _ in range(3)]
    await clock.run()
    assert [f.result().reason for f in futs] == ["server_down"] * 3  # type: ignore[union-attr]
    later = await router.submit(router.request("s"))
    assert isinstance(later, Dropped) and later.reason == "no_server"


async def test_health_probe_brings_the_gpu_back() -> None:
    healthy = False

    async def health(gpu: str) -> bool:
        return healthy

    router, clock, backend = _router(health=health, probe_interval_ms=100.0)
    backend.fail["g0"] = ConnectionError("refused")
    router.submit(router.request("s"))
    await clock.run(until=350.0)
    assert not router.policy.is_up("g0")
    healthy = True
    del backend.fail["g0"]
    await clock.run(until=500.0)
    assert router.policy.is_up("g0")
    fut = router.submit(router.request("s"))
    await clock.run()
    assert isinstance(fut.result(), Answered)


async def test_timeout_counts_as_failure() -> None:
    events: list[object] = []
    router, clock, backend = _router(
        _shared(), grace_ms=10.0, cold_grace_ms=0.0, on_event=lambda now, e: events.append(e)
    )
    backend.hang.add("g0")
    fut = router.submit(router.request("s"))  # to g0, which never answers
    await clock.run()
    out = fut.result()
    # Timed out at its deadline 50 + grace max(10, l(1)=5) = 60 ms: the GPU is down, and
    # the retry on g1 could not be on time any more.
    assert isinstance(out, Dropped) and out.reason == "server_down"
    assert out.at == pytest.approx(60.0)
    (ended,) = [e for e in events if isinstance(e, BatchEnded)]
    assert ended.status == "failed" and "timed out after 60 ms" in ended.error
    assert backend.timeouts == [pytest.approx(0.060)]  # the transport carries the deadline
    assert not router.policy.is_up("g0")
    later = router.submit(router.request("s"))
    await clock.run()
    assert isinstance(later.result(), Answered) and later.result().gpu == "g1"  # type: ignore[union-attr]


async def test_a_gpus_first_batch_gets_the_cold_grace() -> None:
    # alpha 0: the policy keeps believing the profile, so the second request is sent too.
    policy = BatchPolicy(plan(("g0", 20.0, [("s", "m", 4, 50.0)])), curves(), alpha=0.0)
    router, clock, backend = _router(policy, grace_ms=10.0, cold_grace_ms=300.0)
    backend.latency = lambda gpu, model, n: 200.0  # cold: the model's first run
    first = router.submit(router.request("s"))  # deadline 50, times out at 50 + 300
    await clock.run()
    assert isinstance(first.result(), Answered)  # late, but the server stays up
    assert router.policy.is_up("g0")
    t0 = clock.now()
    second = router.submit(router.request("s"))  # warm now: 50 + max(10, l) past its start
    await clock.run()
    out = second.result()
    assert isinstance(out, Dropped) and out.reason == "server_down"
    assert out.at - t0 == pytest.approx(50.0 + 10.0)


def test_batch_timeout_follows_the_batch_deadline() -> None:
    def batch(deadlines: list[float], expected: float) -> Dispatch:
        rs = tuple(Request(i, "s", 0.0, d) for i, d in enumerate(deadlines))
        return Dispatch("g0", "s", "m", rs, 0, len(rs), expected)

    # The latest deadline, plus the grace (at least 50 ms).
    assert batch_timeout_ms(batch([40.0, 90.0], 8.0), 10.0) == pytest.approx(80.0 + 50.0)
    # A batch sent already late still gets twice its expected time, and a long batch at
    # least its own length as grace.
    assert batch_timeout_ms(batch([5.0], 80.0), 10.0) == pytest.approx(160.0 + 80.0)
    assert batch_timeout_ms(batch([5.0], 8.0), 10.0, factor=3.0, grace_ms=0.0) == pytest.approx(
        24.0 + 8.0
    )


async def test_rejected_batch_is_dropped_with_the_servers_reason() -> None:
    router, clock, backend = _router()
    backend.fail["g0"] = BatchRejectedError("input 'x': expected FP32, got INT64")
    fut = router.submit(router.request("s"))
    await clock.run()
    out = fut.result()
    assert isinstance(out, Dropped) and out.reason == "rejected" and "FP32" in out.detail
    assert router.policy.is_up("g0")


async def test_wrong_number_of_results_is_a_failure() -> None:
    class Short:
        async def infer(
            self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
        ) -> list[object]:
            return []

    router = AsyncRouter(one_gpu_policy(), Short(), clock=VirtualClock())
    out = await router.submit(router.request("s"))
    assert isinstance(out, Dropped) and out.reason == "server_down"


async def test_shutdown_answers_everything_once() -> None:
    router, clock, backend = _router(_shared())
    backend.hang.add("g1")
    futs = [router.submit(router.request("s")) for _ in range(6)]  # g0, g1 busy; 4 queued
    stopping = asyncio.ensure_future(router.shutdown(grace_ms=100.0))
    await clock.run()
    await stopping
    outs = [f.result() for f in futs]
    assert isinstance(outs[0], Answered)  # g0's batch finished within the grace
    assert [o.reason for o in outs[1:]] == ["shutting_down"] * 5  # type: ignore[union-attr]
    assert router.pending() == 0
    late = await router.submit(router.request("s"))
    assert isinstance(late, Dropped) and late.reason == "shutting_down"


async def test_real_clock_round_trip() -> None:
    class Echo:
        async def infer(
            self, gpu: str, model: str, batch: Sequence[Request], *, timeout_s: float | None = None
        ) -> list[object]:
            await asyncio.sleep(0.002)
            return [r.payload * 2 for r in batch]

    router = AsyncRouter(one_gpu_policy(slo=2000.0), Echo(), clock=LoopClock())
    outs = await asyncio.gather(*(router.infer("s", payload=i) for i in range(20)))
    assert [o.result for o in outs] == [2 * i for i in range(20)]  # type: ignore[union-attr]
    await router.shutdown()


async def test_a_failing_event_hook_loses_nothing() -> None:
    def broken(now: float, event: object) -> None:
        raise RuntimeError("metrics exploded")

    router, clock, _ = _router(on_event=broken)
    futs = [router.submit(router.request("s")) for _ in range(3)]
    await clock.run()
    assert all(isinstance(f.result(), Answered) for f in futs)


async def test_invalid_request_raises_and_leaves_nothing_pending() -> None:
    router, _, _ = _router()
    with pytest.raises(ValueError, match="n_samples"):
        router.submit(Request(0, "s", 0.0, 50.0, n_samples=0))
    assert router.pending() == 0
    with pytest.raises(ValueError, match="twice"):
        r = router.request("s")
        router.submit(r)
        router.submit(r)
    await router.shutdown(grace_ms=0)
    assert router.pending() == 0
