"""The one task per process that copies its runs' logs to their Redis Streams.

Design record
- The run task never waits on Redis: `PublishedLog.append` is the memory log's append plus a
  flag and a counter; the publisher wakes `window_s` after the first dirty append (or once
  `batch_events` appends wait) and writes every dirty log's new events in one command on its
  own connection (`WRITE`, app/log/_redis_stream.py). Why: a token is a few dozen bytes; a
  Redis call per token, or per run and pass, would cost the event loop more than the run.
- The terminal events (`error`, `end`) wait until the log is `sealed()` (its final record is
  in the store), then go out with the stream's expiry in the same command. Until then the
  stream has no expiry: a live run's events never vanish under its readers.
- Nothing is dropped: the memory log holds every event, and `published` is only moved on a
  confirmed write. After any failure (a dropped connection, a lost reply, a restart that lost
  the stream) every log is re-synced before the next write: its stream's last entry id says
  what Redis has, and publishing resumes from there.
- Redis down: retried with backoff (app/log/_redis_stream.py); past `bound_s` `on_failure`
  is called once and retries go on less often; the first write after that calls
  `on_recovered`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aredis

from app.engine.codec import LogEvent
from app.log._redis_stream import WRITE, Backoff, Write, event_id_of, problem_of
from app.log.memory import MemoryEventLog

log = logging.getLogger("app.log.redis")

TERMINAL = frozenset({"error", "end"})


class PublishedLog(MemoryEventLog):
    """A run's memory log whose events the publisher copies to the run's stream."""

    def __init__(self, run_id: str, key: str, publisher: Publisher) -> None:
        super().__init__(run_id)
        self.key = key
        self.published = 0  # the last event id Redis confirmed
        self.is_sealed = False
        self.dirty = False
        self.resync = False
        self._publisher = publisher

    def append(self, event_type: str, data: Any) -> LogEvent:
        event = super().append(event_type, data)
        publisher = self._publisher
        publisher.waiting += 1
        if not self.dirty:
            self.dirty = True
            publisher.mark(self)
        elif publisher.waiting >= publisher.batch_events:
            publisher.full.set()
        return event

    def sealed(self) -> None:
        self.is_sealed = True
        if not self.dirty:
            self.dirty = True
            self._publisher.mark(self)

    def publishable(self) -> int:
        """The id up to which events may be published: all once sealed, else those before the
        first terminal event."""
        last = self.last_id
        if self.is_sealed:
            return last
        for event in self.after(self.published, last - self.published):
            if event.type in TERMINAL:
                return event.id - 1
        return last


class Publisher:
    def __init__(
        self,
        client: aredis.Redis,
        channel: str,
        ttl_s: float,
        bound_s: float,
        window_s: float,
        batch_events: int,
        on_failure: Callable[[str], None],
        on_recovered: Callable[[], None],
    ) -> None:
        self._client = client
        self._script = client.register_script(WRITE)
        self._channel = channel
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._window_s = window_s
        self.batch_events = batch_events
        self._on_failure = on_failure
        self._on_recovered = on_recovered
        self._backoff = Backoff(bound_s)
        self._reported = False
        self.problem: str | None = None  # what is wrong with Redis, while it is
        self.failed_writes = 0
        self.logs: dict[str, PublishedLog] = {}  # open logs not yet fully published
        self.waiting = 0  # appends since the last write
        self._dirty: list[PublishedLog] = []
        self._wake = asyncio.Event()
        self.full = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def add(self, published: PublishedLog) -> None:
        self.logs[published.run_id] = published
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redis-log-publisher")

    def mark(self, published: PublishedLog) -> None:
        self._dirty.append(published)
        self._wake.set()

    async def stop(self, timeout_s: float) -> None:
        """Publish what may be published (for up to `timeout_s`), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        self.full.set()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning("redis log: stopped with events not published (%s)", self.problem)
            task.cancel()
            await asyncio.wait({task})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._stopping and self.waiting < self.batch_events:
                timer = loop.call_later(self._window_s, self.full.set)
                await self.full.wait()
                timer.cancel()
            self._wake.clear()
            self.full.clear()
            try:
                await self._write()
            except Exception as exc:  # never the end of the publisher: retried
                self._down(problem_of(exc))
                await asyncio.sleep(self._backoff.failed())
                continue
            self._up()
            if self._stopping and not self._dirty:
                return

    async def _write(self) -> None:
        dirty, self._dirty = self._dirty, []
        self.waiting = 0
        for published in dirty:
            published.dirty = False
        try:
            await self._resync([p for p in dirty if p.resync])
            write = Write()
            plan = []
            for published in dirty:
                upto = published.publishable()
                events = published.after(published.published, upto - published.published)
                sealing = published.is_sealed
                n = write.add(published.run_id, published.key, events, sealing)
                if n:
                    plan.append((published, n, sealing, upto))
            results = await write.send(self._script, self._ttl_ms, self._channel)
        except BaseException:
            for published in dirty:
                self._again(published, resync=True)
            raise
        at = 0
        for published, n, sealing, upto in plan:
            refused = [results[i] for i in range(at, at + n) if i in results]
            at += n
            if refused:  # the stream has other ids than we thought (a lost reply, a take-over)
                log.info("redis log %s: re-sync after %s", published.run_id, refused[0])
                self._again(published, resync=True)
                continue
            published.published = upto  # what was appended meanwhile marked it dirty again
            if sealing and self.logs.get(published.run_id) is published:
                del self.logs[published.run_id]

    async def _resync(self, logs: list[PublishedLog]) -> None:
        if not logs:
            return
        pipe = self._client.pipeline(transaction=False)
        for published in logs:
            pipe.xrevrange(published.key, "+", "-", count=1)
        tops = await pipe.execute()
        for published, top in zip(logs, tops, strict=True):
            last = event_id_of(top[0][0]) if top else 0
            published.published = min(last, published.last_id)
            published.resync = False

    def _again(self, published: PublishedLog, *, resync: bool) -> None:
        published.resync = published.resync or resync
        if not published.dirty:
            published.dirty = True
            self.mark(published)

    def _down(self, problem: str) -> None:
        self.failed_writes += 1
        if self.problem is None:
            log.warning("redis log: %s; retrying", problem)
        self.problem = problem
        for published in self.logs.values():  # a restart may have lost any stream
            self._again(published, resync=True)
        if not self._reported and self._backoff.past_bound:
            self._reported = True
            log.error("redis log: %s for %.0f s", problem, self._backoff.bound_s)
            _call(self._on_failure, problem)

    def _up(self) -> None:
        if self.problem is None:
            return
        self.problem = None
        self._backoff.succeeded()
        log.warning("redis log: Redis answers again")
        if self._reported:
            self._reported = False
            _call(self._on_recovered)


def _call(callback: Callable[..., None], *args: Any) -> None:
    """A callback's own failure is logged, never the publisher's end."""
    try:
        callback(*args)
    except Exception:
        log.exception("redis log: callback %r failed", callback)
