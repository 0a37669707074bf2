"""What the Redis shared log costs per appended token (not part of `make bench`: it needs Redis).

    python -m bench.shared_log [--runs 50] [--tokens 4000] [--repeat 5] [--redis URL]

`runs` run tasks each append `tokens` token events, yielding to the loop after every append (as
a run's task does between model chunks; `--gap-ms` waits that long instead, a model's pace),
into (a) plain memory logs, (b) the owner's logs of a
`RedisSharedLog` (the appends plus the publisher's batching and pipelines), (c) the same with a
follower of every run on a second `RedisSharedLog` in this process (the tails too). The figure
is this process's CPU per token, each side's median over `repeat` alternating repetitions, and
the difference against (a); Redis's own CPU per token (INFO's `used_cpu_*`) is beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import redis

from app.engine.ports import EventLog, EventLogReader
from app.log.memory import MemoryEventLog
from app.log.redis import RedisSharedLog


def _redis_cpu_s(conn: redis.Redis) -> float:
    info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _run(log: EventLog, run_id: str, tokens: int, gap_s: float) -> None:
    for i in range(tokens):
        log.append("token", {"node": "llm", "ns": [], "message_id": run_id, "text": f"w{i} "})
        await asyncio.sleep(gap_s)
    log.append("end", {"status": "completed"})
    log.close()
    log.sealed()


async def _drain(reader: EventLogReader) -> None:
    while not reader.closed:
        await reader.wait(reader.last_id)


async def _once(kind: str, url: str, runs: int, tokens: int, gap_s: float) -> tuple[float, float]:
    """(this process's CPU s, Redis's CPU s) for one repetition."""
    conn = redis.Redis.from_url(url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    owner = RedisSharedLog(url, prefix) if kind != "memory" else None
    reader = RedisSharedLog(url, prefix) if kind == "follow" else None
    ids = [f"run-{i}" for i in range(runs)]
    followers = [reader.follow(run_id) for run_id in ids] if reader is not None else []
    logs: list[EventLog] = [
        owner.open(run_id) if owner is not None else MemoryEventLog(run_id) for run_id in ids
    ]
    redis_before, before = _redis_cpu_s(conn), time.process_time()
    await asyncio.gather(
        *(_run(log, run_id, tokens, gap_s) for log, run_id in zip(logs, ids, strict=True))
    )
    await asyncio.gather(*(_drain(f) for f in followers))
    if owner is not None:
        await owner.close()  # publishes the last batches
    cpu, redis_cpu = time.process_time() - before, _redis_cpu_s(conn) - redis_before
    if reader is not None:
        await reader.close()
    for key in conn.scan_iter(f"{prefix}:*"):
        conn.delete(key)
    conn.close()
    return cpu, redis_cpu


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_log")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gap-ms", type=float, default=0.0, help="between a run's appends")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    kinds = ("memory", "publish", "follow")
    got: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeat):
        for kind in kinds:
            got[kind].append(
                asyncio.run(_once(kind, args.redis, args.runs, args.tokens, args.gap_ms / 1000))
            )
    n = args.runs * args.tokens
    base = statistics.median(cpu for cpu, _ in got["memory"]) / n * 1e6
    print(
        f"{args.runs} runs x {args.tokens} tokens, {args.gap_ms} ms apart, median of"
        f" {args.repeat}; µs per token"
    )
    for kind in kinds:
        cpu = statistics.median(c for c, _ in got[kind]) / n * 1e6
        spread = [c / n * 1e6 for c, _ in got[kind]]
        server = statistics.median(r for _, r in got[kind]) / n * 1e6
        print(
            f"  {kind:8} process {cpu:6.2f} (min {min(spread):.2f}, max {max(spread):.2f})"
            f"  +{cpu - base:5.2f} vs memory   redis-server {server:5.2f}"
        )


if __name__ == "__main__":
    main()
