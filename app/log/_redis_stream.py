"""A run's Redis Stream as the shared log writes and reads it: keys, entries, clients, retries.

Entry format
- Key `<prefix>:events:<run_id>`; one entry per published batch of the run's events.
- Entry id `0-<id of the batch's last event>`: explicit, so the stream's ids follow ours. A
  reader resumes after the last entry it read (XREAD/XRANGE from `0-<N>`) and nothing repeats;
  the writer resumes after the stream's last entry (XREVRANGE + - COUNT 1), and a retried write
  Redis already has is refused (ids only grow) instead of stored twice.
- One field, `e`: the batch as `encode_chunk` lines (`ID TYPE PAYLOAD\\n`, app/engine/codec.py),
  the payloads' JSON bytes as the log holds them, never decoded or re-encoded.
- An entry holds at most `ENTRY_EVENTS` events or about `ENTRY_BYTES` bytes (one bigger event
  is an entry of its own), so no single reply is huge when a stream is read from the start.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.engine.codec import LogEvent, decode_chunk

FIELD = b"e"
ENTRY_EVENTS = 512
ENTRY_BYTES = 256 * 1024

DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a call raises when Redis does not answer (as opposed to refusing a command)."""

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
RETRY_SLOW_S = 2.0
"""Backoff while Redis does not answer: doubling from the first to the max delay within the
bound, then every `RETRY_SLOW_S` (or the bound, if shorter): a failure already reported need
not be retried eagerly."""


Entries = list[tuple[bytes, dict[bytes, bytes]]]
"""XRANGE's reply on a client that does not decode responses."""


def stream_key(prefix: str, run_id: str) -> str:
    return f"{prefix}:events:{run_id}"


def entry_id(last_event_id: int) -> str:
    return f"0-{last_event_id}"


def event_id_of(entry: bytes | str) -> int:
    """Our id of the last event in the entry with this stream id (`0-<N>`)."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.partition("-")[2])


def entries(events: Sequence[LogEvent]) -> Iterator[Sequence[LogEvent]]:
    """`events` cut into consecutive entries of at most ENTRY_EVENTS events / ~ENTRY_BYTES."""
    start, size = 0, 0
    for i, event in enumerate(events):
        if i > start and (i - start >= ENTRY_EVENTS or size + len(event.payload) > ENTRY_BYTES):
            yield events[start:i]
            start, size = i, 0
        size += len(event.payload)
    if start < len(events):
        yield events[start:]


def decode_entry(fields: dict[bytes, bytes]) -> list[LogEvent]:
    return decode_chunk(fields[FIELD])


def client(url: str, socket_timeout_s: float, single_connection: bool = False) -> aredis.Redis:
    """A client that fails at once instead of retrying: the callers retry with their own bounds
    (and a publisher must see every failure, to re-sync after it)."""
    return aredis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=single_connection,
    )


class Backoff:
    """The delays between attempts while Redis does not answer, and whether the failure has
    lasted past `bound_s` (then the caller reports it once)."""

    def __init__(self, bound_s: float) -> None:
        self.bound_s = bound_s
        self.since: float | None = None
        self._delay = RETRY_FIRST_S

    @property
    def past_bound(self) -> bool:
        return self.since is not None and time.monotonic() - self.since >= self.bound_s

    def failed(self) -> float:
        """Note a failed attempt; the delay before the next one."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        left = self.since + self.bound_s - now
        if left <= 0:
            return min(RETRY_SLOW_S, self.bound_s)
        delay = min(self._delay, left)
        self._delay = min(self._delay * 2, RETRY_MAX_S)
        return delay

    def succeeded(self) -> None:
        self.since = None
        self._delay = RETRY_FIRST_S
