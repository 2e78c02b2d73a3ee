"""Open-loop traffic with rates that change over time, for the demo and the control-plane tests.

Several streams (one per session), each a Poisson process whose rate is
piecewise constant (`phases`: from time t on, rate r). Arrivals never wait for
answers. Every request ends in exactly one Record with its HTTP status (or -1
for a client timeout, -2 for a transport error) and absolute times, so the
caller can draw offered load, goodput and drops over time.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

TIMEOUT, TRANSPORT_ERROR = -1, -2


@dataclass(slots=True)
class Stream:
    name: str
    url: str
    body: bytes
    phases: list[tuple[float, float]]  # (from second, rate req/s), sorted by time
    slo_ms: float
    headers: dict[str, str] = field(default_factory=dict)

    def arrivals(self, duration_s: float, rng: random.Random) -> list[float]:
        out: list[float] = []
        bounds = [t for t, _ in self.phases[1:]] + [duration_s]
        for (start, rate), end in zip(self.phases, bounds, strict=True):
            t = start
            while rate > 0:
                t += rng.expovariate(rate)
                if t >= min(end, duration_s):
                    break
                out.append(t)
        return out


@dataclass(slots=True)
class Record:
    stream: str
    due: float  # scheduled arrival, seconds from the start
    sent: float
    done: float
    status: int
    slo_ms: float
    reason: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.done - self.sent) * 1000.0

    @property
    def in_slo(self) -> bool:
        return self.status == 200 and self.latency_ms <= self.slo_ms


async def drive(
    streams: list[Stream], duration_s: float, seed: int = 0, timeout_s: float = 30.0
) -> list[Record]:
    """Send every stream's arrivals on time; return one Record per request, once all answered."""
    import aiohttp

    rng = random.Random(seed)
    plan = sorted(
        ((t, s) for s in streams for t in s.arrivals(duration_s, rng)), key=lambda x: x[0]
    )
    loop = asyncio.get_running_loop()
    records: list[Record] = []

    async def one(session: aiohttp.ClientSession, s: Stream, due: float, start: float) -> None:
        sent = loop.time() - start
        status, reason = TRANSPORT_ERROR, ""
        try:
            async with session.post(s.url, data=s.body, headers=s.headers) as r:
                payload = await r.read()
                status = r.status
                if status != 200 and payload[:1] == b"{":
                    import json

                    reason = str(json.loads(payload).get("reason", ""))
        except TimeoutError:
            status, reason = TIMEOUT, "client timeout"
        except aiohttp.ClientError as err:
            reason = type(err).__name__
        records.append(Record(s.name, due, sent, loop.time() - start, status, s.slo_ms, reason))

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as session:
        start = loop.time() + 0.05
        tasks = []
        for due, s in plan:
            delay = start + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(one(session, s, due, start)))
        await asyncio.gather(*tasks)
    return records
