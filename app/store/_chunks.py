"""Event chunks as the database stores keep them (SQLite and PostgreSQL alike).

A chunk is a row `(run_id, first_id, last_id, codec, data)` holding consecutive events in
app/engine/codec.py's chunk format: one raw chunk per flush while a run is live, one compressed
chunk for the whole run once it is sealed. A retried flush starts at the same id and carries at
least as many events, so it replaces its chunk; a reader skips any id it has already read, so
chunks that overlap never yield an event twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from app.engine import codec
from app.engine.codec import LogEvent

COMPRESS_IN_THREAD_BYTES = 256 * 1024  # bigger chunks are compressed off the event loop

ChunkRow = tuple[str, int, int, int, bytes]
"""`(run_id, first_id, last_id, codec, data)`."""


def raw_rows(batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> list[ChunkRow]:
    """One raw chunk per non-empty batch of a flush."""
    return [
        (run_id, events[0].id, events[-1].id, codec.RAW, codec.encode_chunk(events))
        for run_id, events in batches
        if events
    ]


async def sealed_data(events: Sequence[LogEvent]) -> bytes:
    """A finished run's events as one compressed chunk (codec ZLIB)."""
    data = codec.encode_chunk(events)
    if len(data) > COMPRESS_IN_THREAD_BYTES:
        return await asyncio.to_thread(codec.compress_chunk, data)
    return codec.compress_chunk(data)


def events_after(chunks: Iterable[tuple[int, bytes]], after: int) -> list[LogEvent]:
    """The events with id > `after` of `(codec, data)` chunks read in `first_id` order, each
    once."""
    events: list[LogEvent] = []
    for kind, data in chunks:
        for event in codec.open_chunk(kind, bytes(data)):
            if event.id > after and (not events or event.id > events[-1].id):
                events.append(event)
    return events
