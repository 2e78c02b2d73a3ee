"""Open-loop Poisson load over HTTP: arrivals follow a precomputed schedule and never wait for
answers (one connection per request in flight, aiohttp, which tritonclient.http already needs).

Run it in its own process, `python -m deploy.loadgen SPEC.json OUT.json`, so that the
benchmark's bookkeeping cannot delay arrivals; `run_load` does that and returns the result.
Every request ends in exactly one record: its HTTP status, or a negative code for a client
timeout (-1) or a transport error (-2).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

TIMEOUT = -1
TRANSPORT_ERROR = -2


@dataclass(slots=True)
class LoadSpec:
    targets: list[str]  # infer URLs, used round robin
    body_file: str
    headers: dict[str, str]
    rate: float  # requests per second
    duration_s: float
    seed: int = 0
    timeout_s: float = 60.0


@dataclass(slots=True)
class LoadResult:
    duration_s: float
    status: list[int] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)  # send to last byte of the answer
    lag_s: list[float] = field(default_factory=list)  # send time minus scheduled arrival
    errors: dict[str, int] = field(default_factory=dict)  # message → count, for status < 0
    cpu_s: float = 0.0  # the generator's own CPU time

    @property
    def sent(self) -> int:
        return len(self.status)


def poisson_schedule(rate: float, duration_s: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    times, t = [], 0.0
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= duration_s:
            break
        times.append(t)
    return times


async def _run(spec: LoadSpec) -> LoadResult:
    import aiohttp

    body = Path(spec.body_file).read_bytes()
    arrivals = poisson_schedule(spec.rate, spec.duration_s, spec.seed)
    n = len(arrivals)
    res = LoadResult(spec.duration_s, [0] * n, [0.0] * n, [0.0] * n)
    loop = asyncio.get_running_loop()

    async def one(session: aiohttp.ClientSession, i: int, url: str, due: float) -> None:
        t0 = loop.time()
        res.lag_s[i] = t0 - due
        try:
            async with session.post(url, data=body, headers=spec.headers) as r:
                await r.read()
                res.status[i] = r.status
        except TimeoutError:
            res.status[i] = TIMEOUT
            res.errors["client timeout"] = res.errors.get("client timeout", 0) + 1
        except aiohttp.ClientError as err:
            res.status[i] = TRANSPORT_ERROR
            key = f"{type(err).__name__}: {err}"[:120]
            res.errors[key] = res.errors.get(key, 0) + 1
        res.latency_s[i] = loop.time() - t0

    # limit=0: no client-side queue, so a slow server cannot hold back arrivals.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        start = loop.time() + 0.05
        for i, t in enumerate(arrivals):
            due = start + t
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            url = spec.targets[i % len(spec.targets)]
            tasks.append(loop.create_task(one(session, i, url, due)))
        await asyncio.gather(*tasks)
    res.cpu_s = time.process_time() - cpu0
    return res


def run_load(spec: LoadSpec, workdir: Path) -> LoadResult:
    """Run one load in a child process and return what it recorded."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = workdir / "load-spec.json", workdir / "load-result.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    out_path.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.loadgen", str(spec_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=spec.duration_s + spec.timeout_s + 60,
    )
    if proc.returncode != 0:
        from exporters.errors import TnxError

        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise TnxError(f"load generator exited {proc.returncode}: {' | '.join(tail)}")
    return LoadResult(**json.loads(out_path.read_text()))


def main(argv: list[str]) -> None:
    spec = LoadSpec(**json.loads(Path(argv[0]).read_text()))
    res = asyncio.run(_run(spec))
    Path(argv[1]).write_text(json.dumps(asdict(res)))


if __name__ == "__main__":
    main(sys.argv[1:])
