"""Case 8, limits: what the per-key limits cost a run-creation request. The latency of
`POST /graphs/chat/runs` (a one-token answer, the run finishing in the background) and of a
whole `POST /graphs/chat/stream` of one token, one request at a time on a kept-alive
connection, on four services alternated round by round:

    off       no key, no per-key limit (the baseline)
    slots     MAX_RUNS_PER_KEY and MAX_STREAMS_PER_KEY (counters in the process)
    rate      RATE_LIMIT_RUNS in the `limits` memory storage (a moving window)
    redis     RATE_LIMIT_RUNS in Redis (REDIS_URL: the machine's server at 127.0.0.1:6379)
    auth      API_KEYS set, the key sent as `X-Api-Key` (each run's stream_url then signed)
    all       auth, slots and the memory rate together

The limits are set so high that nothing is refused: the figure is the bookkeeping, not a 429.
Beside the latencies, the service's CPU per `POST …/runs` (its process's CPU time over the
requests and the one-token runs they start, divided by the requests), and, in this process, the
time of one admission of `KeyLimits` (a run slot and a rate token, and the window read for the
headers) for each limit alone, which is the part of the request the limits add.
"""

from __future__ import annotations

import time
import uuid

import httpx

from app.auth.throttle import KeyLimits
from app.backends import open_limit_stores
from app.settings import Settings
from bench import client
from bench.cases._common import Context, aio, chat
from bench.harness import Process, service
from bench.report import Figure, percentile

REDIS_URL = "redis://127.0.0.1:6379/0"
HIGH = "1000000"
KEY = "bench-key-0123456789abcdef"
KEY_HEADERS = {"X-Api-Key": KEY}


def _variants(ctx: Context, prefix: str) -> dict[str, Process]:
    slots = {"MAX_RUNS_PER_KEY": HIGH, "MAX_STREAMS_PER_KEY": HIGH}
    rate = {"RATE_LIMIT_RUNS": f"{HIGH}/minute"}
    return {
        "off": service(ctx.upstream),
        "slots": service(ctx.upstream, **slots),
        "rate": service(ctx.upstream, **rate),
        "redis": service(ctx.upstream, **rate, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix),
        "auth": service(ctx.upstream, API_KEYS=f"bench={KEY}"),
        "all": service(ctx.upstream, API_KEYS=f"bench={KEY}", **slots, **rate),
    }


def _headers(kind: str) -> dict[str, str]:
    return KEY_HEADERS if kind in ("auth", "all") else {}


async def _round(
    server: Process, runs: int, streams: int, headers: dict[str, str]
) -> tuple[list[float], list[float], float]:
    """Milliseconds of each `POST …/runs`, then of each whole one-token `POST …/stream`; and
    the service's CPU microseconds per `POST …/runs` (with its run, once all have ended)."""
    body = chat("[[tokens=1]]")
    created: list[float] = []
    streamed: list[float] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers) as http:
        cpu0 = server.cpu_s()
        for _ in range(runs):
            t0 = time.perf_counter()
            response = await http.post("/graphs/chat/runs", json=body)
            created.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 202, response.text
        # the last run's end (its stream returns then): the runs' own work is counted too
        path = f"/runs/{response.json()['run_id']}/stream"
        await client.stream(server.port, "GET", path, headers=headers)
        cpu_us = (server.cpu_s() - cpu0) * 1e6 / runs
    for _ in range(streams):
        t0 = time.perf_counter()
        result = await client.stream(
            server.port, "POST", "/graphs/chat/stream", body, headers=headers
        )
        streamed.append((time.perf_counter() - t0) * 1000)
        assert result.end_data.get("status") == "completed", result
    return created, streamed, cpu_us


async def _admissions(settings: Settings, n: int) -> float:
    """Microseconds of one `KeyLimits` admission (and its release) under `settings`."""
    async with open_limit_stores(settings) as stores:
        limits = KeyLimits(
            rate=settings.run_rate,
            max_runs=settings.max_runs_per_key,
            max_streams=settings.max_streams_per_key,
            storage=stores.rate,
            slots=stores.slots,
        )
        t0 = time.perf_counter()
        for _ in range(n):
            admission = limits.admission("default")
            assert admission is not None
            release = await admission()
            release()
        return (time.perf_counter() - t0) * 1e6 / n


def _in_process(prefix: str, n: int) -> dict[str, float]:
    """One admission's cost for each limit alone, in this process."""
    high = f"{HIGH}/minute"
    variants = {
        "slots": Settings(_env_file=None, max_runs_per_key=int(HIGH)),
        "rate": Settings(_env_file=None, rate_limit_runs=high),
        "redis": Settings(
            _env_file=None, rate_limit_runs=high, redis_url=REDIS_URL, redis_key_prefix=prefix
        ),
    }
    return {kind: aio(_admissions(settings, n)) for kind, settings in variants.items()}


def _drop_keys(prefix: str) -> None:
    import redis

    conn = redis.Redis.from_url(REDIS_URL)
    try:
        for key in conn.scan_iter(f"{prefix}*"):
            conn.delete(key)
    finally:
        conn.close()


def run(ctx: Context) -> list[Figure]:
    rounds = ctx.pick(7, 3)
    runs, streams = ctx.pick((150, 40), (60, 20))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    servers = _variants(ctx, prefix)
    p50: dict[str, dict[str, list[float]]] = {k: {"runs": [], "stream": []} for k in servers}
    p99: dict[str, dict[str, list[float]]] = {k: {"runs": [], "stream": []} for k in servers}
    cpu: dict[str, list[float]] = {k: [] for k in servers}
    admission: dict[str, list[float]] = {"slots": [], "rate": [], "redis": []}
    try:
        for kind, server in servers.items():
            server.start("/readyz")
            aio(_round(server, 150, 20, _headers(kind)))  # warm up: imports, pools, the window
        for i in range(rounds):
            order = list(servers.items())
            if i % 2:
                order.reverse()  # alternate, so a drift of the machine favours none
            for kind, server in order:
                created, streamed, cpu_us = aio(_round(server, runs, streams, _headers(kind)))
                cpu[kind].append(cpu_us)
                for route, samples in (("runs", created), ("stream", streamed)):
                    p50[kind][route].append(percentile(samples, 50))
                    p99[kind][route].append(percentile(samples, 99))
            for kind, us in _in_process(prefix, ctx.pick(5000, 1000)).items():
                admission[kind].append(us)
    finally:
        for server in servers.values():
            server.stop()
        _drop_keys(prefix)
    note = f"{rounds} rounds x ({runs} runs + {streams} streams), sequential"
    figures: list[Figure] = []
    for route, what in (("runs", "POST /runs"), ("stream", "POST /stream, 1 token")):
        for kind in ("slots", "rate", "redis", "auth", "all"):
            if route == "stream" and kind in ("rate", "redis"):
                continue  # a stream's run takes the same rate token as a background run
            for stat, table in (("p50", p50), ("p99", p99)):
                figures.append(
                    Figure(
                        "limits",
                        f"{what} {stat}: {kind} vs off",
                        "ms",
                        table[kind][route],
                        baseline=table["off"][route],
                        baseline_name="off",
                        note=note if not figures else "",
                    )
                )
    for kind in ("slots", "rate", "redis", "auth", "all"):
        figures.append(
            Figure(
                "limits",
                f"service CPU per POST /runs: {kind} vs off",
                "us",
                cpu[kind],
                baseline=cpu["off"],
                baseline_name="off",
            )
        )
    for kind in ("slots", "rate", "redis"):
        figures.append(
            Figure("limits", f"one admission, in process: {kind}", "us", admission[kind])
        )
    return figures
