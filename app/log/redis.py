"""The shared log on Redis Streams: each live run's events where every worker reads them.

Design record
- The owner's log is a memory log (`open`): its run appends as cheaply as with one process,
  and one publisher task per process copies every run's new events to the run's stream in
  batches, off the run's task (app/log/_publisher.py). Ids and payload bytes are the owner's;
  the entry format is in app/log/_redis_stream.py.
- The terminal events wait for `sealed()` (the final record is in the store first, so a reader
  that sees `end` anywhere finds the record); then the stream gets its expiry, `events_ttl_s`:
  long enough for a reader on another worker to finish reading, after which the store has the
  events. A live run's stream never expires.
- Another worker's run is read through one follower per run in a process (`follow`,
  app/log/_follower.py), fed by the process's one tail (app/log/_tail.py): woken by the
  publishers' messages, it reads every followed run that has news in one call.
- Redis down: nothing is dropped (the memory logs hold everything); the publisher retries,
  reports past `retry_bound_s` through `on_failure` (once) and `on_recovered`, and re-syncs
  each stream from its last entry when Redis answers again, restarted and empty or not.
  `probe` raises meanwhile; a follower's `wait` raises `SharedLogUnavailable` past the bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.engine.codec import LogEvent
from app.engine.ports import EventLog, SharedLogUnavailable
from app.log._follower import Follower
from app.log._publisher import PublishedLog, Publisher
from app.log._redis_stream import (
    WRITE,
    Entries,
    Write,
    channel,
    client,
    decode_entry,
    event_id_of,
    problem_of,
    stream_key,
)
from app.log._tail import Tail

EVENTS_TTL_S = 300.0
RETRY_BOUND_S = 10.0
WINDOW_S = 0.005
"""How long the publisher lets appends gather after the first one: a few ms of latency for a
reader on another worker, for one write per window instead of one per token."""
BATCH_EVENTS = 512
"""Or as soon as this many appends wait."""
FOLLOW_IDLE_S = 30.0
PAGE_ENTRIES = 256


class RedisSharedLog:
    def __init__(
        self,
        url: str,
        key_prefix: str,
        *,
        events_ttl_s: float = EVENTS_TTL_S,
        retry_bound_s: float = RETRY_BOUND_S,
        window_s: float = WINDOW_S,
        batch_events: int = BATCH_EVENTS,
        follow_idle_s: float = FOLLOW_IDLE_S,
        on_failure: Callable[[str], None] = lambda problem: None,
        on_recovered: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_failure(problem)`: Redis has not answered the publisher for `retry_bound_s`
        (called once, until `on_recovered`). Both are attributes, and may be set later."""
        self._prefix = key_prefix
        self._ttl_ms = max(1, int(events_ttl_s * 1000))
        self._bound_s = retry_bound_s
        self.on_failure = on_failure
        self.on_recovered = on_recovered
        self._client = client(url, socket_timeout_s=5.0)
        self._script = self._client.register_script(WRITE)
        self._writer = client(url, socket_timeout_s=5.0, single_connection=True)
        self._publisher = Publisher(
            self._writer,
            channel(key_prefix),
            ttl_s=events_ttl_s,
            bound_s=retry_bound_s,
            window_s=window_s,
            batch_events=batch_events,
            on_failure=lambda problem: self.on_failure(problem),
            on_recovered=lambda: self.on_recovered(),
        )
        self._tail = Tail(url, key_prefix, bound_s=retry_bound_s, idle_s=follow_idle_s)

    @property
    def problem(self) -> str | None:
        """What is wrong with Redis while the publisher cannot write (None: nothing)."""
        return self._publisher.problem

    @property
    def failed_writes(self) -> int:
        """The publisher's writes that failed because Redis did not answer, since the start."""
        return self._publisher.failed_writes

    def open(self, run_id: str) -> EventLog:
        log = PublishedLog(run_id, stream_key(self._prefix, run_id), self._publisher)
        self._publisher.add(log)
        return log

    def follow(self, run_id: str) -> Follower:
        return self._tail.follow(run_id)

    async def published(self, run_id: str) -> list[LogEvent]:
        key = stream_key(self._prefix, run_id)
        out: list[LogEvent] = []
        start = "-"
        try:
            while True:
                page = cast(Entries, await self._client.xrange(key, start, "+", count=PAGE_ENTRIES))
                for _entry, fields in page:
                    out.extend(decode_entry(fields))
                if len(page) < PAGE_ENTRIES:
                    return out
                start = f"({page[-1][0].decode()}"
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def publish(self, run_id: str, events: Sequence[LogEvent]) -> None:
        key = stream_key(self._prefix, run_id)
        try:
            top = cast(Entries, await self._client.xrevrange(key, "+", "-", count=1))
            last = event_id_of(top[0][0]) if top else 0
            write = Write()
            write.add(run_id, key, [event for event in events if event.id > last], expire=True)
            results = await write.send(self._script, self._ttl_ms, channel(self._prefix))
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if results:
            problem = next(iter(results.values()))
            raise SharedLogUnavailable(f"the shared log refused events of {run_id}: {problem}")

    async def probe(self) -> None:
        """Whether Redis answers now. Not the publisher's last failure: that may be one
        connection Redis closed when it restarted, which the publisher's next write replaces
        (and a publisher failing past its bound has told the engine, which then starts
        nothing until it recovers)."""
        try:
            await self._client.ping()
        except RedisConnectionError:
            # Pooled connections Redis closed (it restarted) fail; fresh ones answer.
            await self._client.connection_pool.disconnect()
            try:
                await self._client.ping()
            except RedisError as exc:
                raise _unavailable(exc) from exc
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        """Publish what may be published (for up to `retry_bound_s`), stop the tail, close the
        connections."""
        await self._publisher.stop(self._bound_s)
        await self._tail.close()
        await self._client.aclose()
        await self._writer.aclose()


def _unavailable(exc: RedisError) -> SharedLogUnavailable:
    return SharedLogUnavailable(f"the shared log cannot be used: {problem_of(exc)}")
