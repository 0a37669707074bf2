"""A run's Redis Stream as the shared log writes and reads it: keys, entries, scripts, clients,
retries.

Entry format
- Key `<prefix>:events:<run_id>`; one entry per published batch of the run's events.
- Entry id `0-<id of the batch's last event>`: explicit, so the stream's ids follow ours. A
  reader resumes after the last entry it read (XRANGE from `(0-<N>`) and nothing repeats; the
  writer resumes after the stream's last entry (XREVRANGE + - COUNT 1), and a retried write
  Redis already has is refused (ids only grow) instead of stored twice.
- One field, `e`: the batch as `encode_chunk` lines (`ID TYPE PAYLOAD\\n`, app/engine/codec.py),
  the payloads' JSON bytes as the log holds them, never decoded or re-encoded.
- An entry holds at most `ENTRY_EVENTS` events or about `ENTRY_BYTES` bytes (one bigger event
  is an entry of its own), so no single reply is huge when a stream is read from the start.

Two Lua scripts, so that one call serves every run
- `WRITE`: any number of entries of any number of runs, each optionally followed by the
  stream's expiry, then one message on the channel `<prefix>:events` naming the runs written
  (a JSON list of run ids). `READ`: the entries after a cursor of any number of streams.
- Why: at a model's pace a run has one token per publisher pass, so a command per run and
  pass (and a blocked XREAD per followed run) cost the client more per token than the rest of
  the service. Each script's arguments and reply are framed into a few bulk strings: a
  command's client cost is mostly per argument and per reply element.
- They take their keys as arguments, not as KEYS: fine on one Redis (primary and replicas),
  refused by a Redis Cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.engine.codec import LogEvent, decode_chunk, encode_chunk

log = logging.getLogger("app.log.redis")

FIELD = b"e"
ENTRY_EVENTS = 512
ENTRY_BYTES = 256 * 1024

DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a call raises when Redis does not answer (as opposed to refusing a command)."""


def problem_of(exc: Exception) -> str:
    """What is wrong, for a failed call to Redis (or a bug of ours: logged with its trace)."""
    if isinstance(exc, DOWN):
        return f"Redis does not answer: {type(exc).__name__}: {exc}"
    if isinstance(exc, RedisError):
        return f"Redis refused the command: {type(exc).__name__}: {exc}"
    log.exception("redis log: unexpected failure")
    return f"the shared log failed: {type(exc).__name__}: {exc}"


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


def channel(prefix: str) -> str:
    return f"{prefix}:events"


WRITE = """
-- ARGV: the expiry (ms), the channel, the message ('' for none), then the entries, each framed
-- as "<key length> <last event id, 0 for the expiry alone> <1: set the expiry> <field length>"
-- and a newline, then the key and the field. Returns {index, error, ...} of the entries Redis
-- refused (an id not above the stream's last): normally nothing.
local blob, pos, i, refused = ARGV[4], 1, 0, {}
while pos <= #blob do
  i = i + 1
  local nl = string.find(blob, '\\n', pos, true)
  local klen, id, expire, flen =
    string.match(string.sub(blob, pos, nl - 1), '^(%d+) (%d+) (%d) (%d+)$')
  klen, flen = tonumber(klen), tonumber(flen)
  local key = string.sub(blob, nl + 1, nl + klen)
  local ok = true
  if id ~= '0' then
    local field = string.sub(blob, nl + klen + 1, nl + klen + flen)
    local added = redis.pcall('XADD', key, '0-' .. id, 'e', field)
    if type(added) == 'table' and added.err then
      ok = false
      refused[#refused + 1] = i - 1
      refused[#refused + 1] = added.err
    end
  end
  if ok and expire == '1' then redis.call('PEXPIRE', key, ARGV[1]) end
  pos = nl + klen + flen + 1
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return refused
"""


class Write:
    """The entries of one `WRITE` call, framed into one argument: a command's cost in the
    client is mostly per argument and per reply element, and this has four and, normally, an
    empty reply."""

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._runs: list[str] = []

    def add(self, run_id: str, key: str, events: Sequence[LogEvent], expire: bool) -> int:
        """Add the run's events as entries (the expiry after the last, if `expire`); return
        how many entries that is."""
        name = key.encode()
        added = 0
        for chunk in entries(events):
            field = encode_chunk(chunk)
            flag = 1 if expire and chunk[-1] is events[-1] else 0
            head = b"%d %d %d %d\n" % (len(name), chunk[-1].id, flag, len(field))
            self._frames += [head, name, field]
            added += 1
        if added:
            self._runs.append(run_id)
        elif expire:
            self._frames += [b"%d 0 1 0\n" % len(name), name]
            added = 1
        return added

    async def send(self, script: AsyncScript, ttl_ms: int, channel: str) -> dict[int, str]:
        """The entries Redis refused (by index), with its error."""
        if not self._frames:
            return {}
        message = orjson.dumps(self._runs) if self._runs else b""
        reply = await script([], [ttl_ms, channel, message, b"".join(self._frames)])
        return {int(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}


READ = """
-- ARGV: the most entries per stream, the most bytes in all, then per stream its key and the
-- event id of the last entry read. Returns the entries after each cursor, each framed as
-- "<stream index> <last event id> <field length>", a newline and the field; and the indexes
-- of the streams that may have more (cut by either limit).
local count, budget, out, size, more = tonumber(ARGV[1]), tonumber(ARGV[2]), {}, 0, {}
for s = 0, (#ARGV - 2) / 2 - 1 do
  if size >= budget then
    more[#more + 1] = s
  else
    local key, cursor = ARGV[3 + 2 * s], ARGV[4 + 2 * s]
    local got = redis.call('XRANGE', key, '(0-' .. cursor, '+', 'COUNT', count)
    for n, entry in ipairs(got) do
      local field = entry[2][2]
      out[#out + 1] = s .. ' ' .. string.sub(entry[1], 3) .. ' ' .. #field .. '\\n'
      out[#out + 1] = field
      size = size + #field
      if size >= budget and n < #got then break end
    end
    if #got == count or size >= budget then more[#more + 1] = s end
  end
end
return {table.concat(out), more}
"""
READ_BYTES = 4 * 1024 * 1024
"""Per `READ` call, about: a follower catching up on a long run reads it in several calls."""


async def read(
    script: AsyncScript, streams: Sequence[tuple[str, int]], count: int
) -> tuple[list[tuple[int, int, bytes]], set[int]]:
    """`(stream index, last event id, field)` of the entries after each `(key, cursor)`, in
    order, and the indexes of the streams to read again."""
    args: list[str | int] = [count, READ_BYTES]
    for key, cursor in streams:
        args += [key, cursor]
    blob, more = await script([], args)
    out = []
    pos, end = 0, len(blob)
    while pos < end:
        nl = blob.index(b"\n", pos)
        index, last, size = blob[pos:nl].split(b" ")
        pos = nl + 1 + int(size)
        out.append((int(index), int(last), blob[nl + 1 : pos]))
    return out, {int(i) for i in more}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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


MAX_CONNECTIONS = 64
"""Per client: its callers take turns (the publisher, the tail) or are few (recovery, probes)."""


def client(url: str, socket_timeout_s: float, single_connection: bool = False) -> aredis.Redis:
    """A client that fails at once instead of retrying: the callers retry with their own bounds
    (and a publisher must see every failure, to re-sync after it)."""
    return aredis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=single_connection,
        max_connections=MAX_CONNECTIONS,
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
