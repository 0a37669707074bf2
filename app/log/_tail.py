"""The process's one reader of the runs it follows: woken by the publishers' messages, it reads
every run that has news in one call.

Design record
- Each publisher pass publishes the ids of the runs it wrote (app/log/_redis_stream.py). A
  listener task (one pub/sub connection) marks the followers of those runs pending; a reader
  task reads all pending followers' streams in one `READ` call from their cursors. Why not a
  blocked XREAD per followed run: a connection per run, and a command per entry per run, cost
  the process more per token than the rest of the service.
- Nothing is missed: after every (re)subscription every registered follower is read once, so
  what was written while no message could arrive is read then; a stream the reply cut short
  (`READ_ENTRIES`, `READ_BYTES`) is read again at once.
- Every `sweep_s` the listener unregisters followers nobody reads (`idle_s`) and drops them,
  and the ended ones once idle, from the cache.
- Redis down: both tasks retry with backoff; past `bound_s` the registered followers are told
  (their waiters raise) and unregistered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
from redis.asyncio.client import PubSub

from app.log._follower import Follower
from app.log._redis_stream import (
    DOWN,
    READ,
    Backoff,
    channel,
    client,
    problem_of,
    read,
    stream_key,
)

log = logging.getLogger("app.log.redis")

READ_ENTRIES = 256
"""Per stream and read."""
READ_STREAMS = 512
"""Per `READ` call."""
SWEEP_S = 1.0
SUBSCRIBE_TIMEOUT_S = 5.0


class Tail:
    def __init__(self, url: str, prefix: str, bound_s: float, idle_s: float) -> None:
        self._prefix = prefix
        self._channel = channel(prefix)
        self._bound_s = bound_s
        self._idle_s = idle_s
        self._sweep_s = min(SWEEP_S, idle_s)
        self._reader = client(url, socket_timeout_s=5.0)
        self._script = self._reader.register_script(READ)
        self._subscriber = client(url, socket_timeout_s=5.0)
        self._cache: dict[str, Follower] = {}  # one per run, while it is read
        self._registered: dict[str, set[Follower]] = {}  # what the tail reads for, by run
        self._pending: set[Follower] = set()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def follow(self, run_id: str) -> Follower:
        follower = self._cache.get(run_id)
        if follower is None:
            follower = Follower(run_id, stream_key(self._prefix, run_id), self._register)
            self._cache[run_id] = follower
            self._register(follower)
        return follower

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for follower in {*self._cache.values(), *self._all_registered()}:
            follower.shut()
        self._cache.clear()
        self._registered.clear()
        await self._reader.aclose()
        await self._subscriber.aclose()

    def _register(self, follower: Follower) -> None:
        follower.registered = True
        self._registered.setdefault(follower.run_id, set()).add(follower)
        self._cache.setdefault(follower.run_id, follower)
        self._pending.add(follower)
        self._kick.set()
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._listen(), name="redis-log-listener"),
                asyncio.create_task(self._read(), name="redis-log-reader"),
            ]

    def _unregister(self, follower: Follower) -> None:
        follower.registered = False
        self._pending.discard(follower)
        group = self._registered.get(follower.run_id)
        if group is not None:
            group.discard(follower)
            if not group:
                del self._registered[follower.run_id]

    def _all_registered(self) -> list[Follower]:
        return [f for group in self._registered.values() for f in group]

    def _failed(self, backoff: Backoff, exc: Exception, doing: str) -> float:
        """Note a failed attempt; the delay before the next one."""
        problem = problem_of(exc)
        if backoff.since is None:
            log.warning("redis log: %s stopped (%s); retrying", doing, problem)
        delay = backoff.failed()
        if backoff.past_bound:
            self._give_up(f"the shared log cannot be read: {problem}")
        return delay

    def _give_up(self, problem: str) -> None:
        for follower in self._all_registered():
            self._unregister(follower)
            follower.fail(problem)

    # -- the listener ----------------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = Backoff(self._bound_s)
        swept = time.monotonic()
        while True:
            pubsub: PubSub | None = None
            try:
                pubsub = await self._subscribe()
                if backoff.since is not None:
                    log.warning("redis log: listening again")
                backoff.succeeded()
                self._pending.update(self._all_registered())  # what no message announced
                self._kick.set()
                while True:
                    message = await pubsub.get_message(timeout=self._sweep_s)
                    if message is not None and message["type"] == "message":
                        self._notified(message["data"])
                    if time.monotonic() - swept >= self._sweep_s:
                        self._sweep()
                        swept = time.monotonic()
            except Exception as exc:  # never the end of the tail: retried
                await asyncio.sleep(self._failed(backoff, exc, "listening"))
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*DOWN):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated

    async def _subscribe(self) -> PubSub:
        """A subscription Redis has confirmed: a write after this is announced to it."""
        pubsub = self._subscriber.pubsub()
        await pubsub.subscribe(self._channel)
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
            while True:
                message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
                if message is not None and message["type"] == "subscribe":
                    return pubsub

    def _notified(self, data: bytes) -> None:
        for run_id in orjson.loads(data):
            group = self._registered.get(run_id)
            if group:
                self._pending.update(group)
                self._kick.set()

    def _sweep(self) -> None:
        for follower in {*self._cache.values(), *self._all_registered()}:
            if follower.idle(self._idle_s):
                self._unregister(follower)
                if self._cache.get(follower.run_id) is follower:
                    del self._cache[follower.run_id]

    # -- the reader ------------------------------------------------------------------------

    async def _read(self) -> None:
        backoff = Backoff(self._bound_s)
        while True:
            await self._kick.wait()
            self._kick.clear()
            batch = list(self._pending)[:READ_STREAMS]
            self._pending.difference_update(batch)
            try:
                await self._read_streams(batch)
            except Exception as exc:  # never the end of the tail: retried
                self._pending.update(f for f in batch if f.registered)
                await asyncio.sleep(self._failed(backoff, exc, "reading"))
                self._kick.set()
                continue
            backoff.succeeded()
            if self._pending:
                self._kick.set()

    async def _read_streams(self, batch: list[Follower]) -> None:
        by_key: dict[str, list[Follower]] = {}
        for follower in batch:
            by_key.setdefault(follower.key, []).append(follower)
        groups = list(by_key.values())
        streams = [(group[0].key, min(f.entry for f in group)) for group in groups]
        got, more = await read(self._script, streams, READ_ENTRIES)
        for index, last, field in got:
            for follower in groups[index]:
                if follower.registered:
                    follower.take(last, field)
        for index, group in enumerate(groups):
            for follower in group:
                if not follower.registered:
                    continue
                if follower.closed:
                    self._unregister(follower)
                elif index in more:
                    self._pending.add(follower)
