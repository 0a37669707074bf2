"""Payload bytes: events as `(id, type, payload)`, the payload compact UTF-8 JSON encoded once.

Design record
- The log holds `LogEvent(id, type, payload)` and never a wire format: each protocol frames
  payloads itself (the native SSE encoder, later others), and a store or a Redis stream holds
  the same bytes whatever protocol reads them. A payload is encoded once, when the event is
  appended, and shared by every reader and by the store. Only the bytes are kept: a dict kept
  beside them made the log the biggest part of what the service added to a live run's memory,
  and a run's log lives as long as the run (docs/perf/0004-rss-per-stream.md).
- Tokens are merged on their bytes, without decoding: a token's payload is
  `{"node":..,"ns":..,"message_id":..,"text":"..."}`, text last, and escaped JSON strings
  concatenate into the escape of the concatenation. So the payloads of consecutive tokens with
  the same head (same node, ns and message) merge into the head, the joined texts and `"}`,
  byte for byte what encoding the merged dict gives (tests/engine/test_codec.py). Why:
  decoding every token a lagging reader merged was the event loop's largest cost with many
  stalled readers (docs/perf/0008-coalescing-by-load.md).
- Stored chunks (`encode_chunk`) are lines of `ID TYPE PAYLOAD`; compact JSON never holds a raw
  newline, so a line is an event. A finished run's chunks are stored compressed
  (`compress_chunk`): token payloads repeat their head, which zlib removes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from app.engine.jsonable import to_jsonable


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON; what orjson cannot encode natively goes through `to_jsonable`.

    Copied to an exact-size object: orjson's result keeps the buffer it wrote into, several
    times a token's payload, and a log keeps every payload for the run's life
    (docs/perf/0013-event-storage-payloads.md)."""
    return b"%s" % orjson.dumps(data, default=_fallback)


def loads(payload: bytes) -> Any:
    return orjson.loads(payload)


def _fallback(value: Any) -> Any:
    converted = to_jsonable(value)
    if converted is value:
        return repr(value)
    return converted


class LogEvent:
    """One event of a run: its id (its position in the run's log, from 1), its type and its
    payload bytes. `data` decodes the payload when asked (a node filter, tests)."""

    __slots__ = ("id", "payload", "type")

    def __init__(self, event_id: int, event_type: str, payload: bytes) -> None:
        self.id = event_id
        self.type = event_type
        self.payload = payload

    @classmethod
    def of(cls, event_id: int, event_type: str, data: Any) -> LogEvent:
        return cls(event_id, event_type, dumps(data))

    @property
    def data(self) -> Any:
        return orjson.loads(self.payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogEvent):
            return NotImplemented
        return (self.id, self.type, self.payload) == (other.id, other.type, other.payload)

    def __hash__(self) -> int:
        return hash((self.id, self.type, self.payload))

    def __repr__(self) -> str:
        return f"LogEvent({self.id}, {self.type!r}, {self.payload.decode(errors='replace')})"


# -- merging tokens on their bytes -----------------------------------------------------------

_TEXT_KEY = b',"text":"'
_TAIL = b'"}'


def token_head(payload: bytes) -> bytes | None:
    """A token payload up to and including its text key, or None if it is not in that shape.
    The text is the last key, and an escaped JSON string holds no bare `"`, so the last
    `,"text":"` is the key itself."""
    if not payload.endswith(_TAIL):
        return None
    cut = payload.rfind(_TEXT_KEY)
    if cut < 0:
        return None
    return payload[: cut + len(_TEXT_KEY)]


def merge_tokens(events: Sequence[LogEvent], start: int) -> tuple[bytes, int]:
    """The payload of `events[start]` merged with the tokens that follow it with the same head;
    the index after the last one merged. A non-token, or a token of another shape, is returned
    as it is."""
    first = events[start]
    end = start + 1
    if first.type != "token" or end == len(events) or events[end].type != "token":
        return first.payload, end
    head = token_head(first.payload)
    if head is None:
        return first.payload, end
    cut = len(head)
    texts = [first.payload[cut:-2]]
    while end < len(events):
        event = events[end]
        payload = event.payload
        if event.type != "token" or not payload.startswith(head) or not payload.endswith(_TAIL):
            break
        texts.append(payload[cut:-2])
        end += 1
    if end == start + 1:
        return first.payload, end
    return b"%s%s%s" % (head, b"".join(texts), _TAIL), end


def merge_runs(events: Sequence[LogEvent]) -> list[tuple[int, str, bytes]]:
    """`events` as `(id, type, payload)`, consecutive tokens of one message merged into the id
    of the last one merged (pure; tested)."""
    out: list[tuple[int, str, bytes]] = []
    i = 0
    while i < len(events):
        payload, j = merge_tokens(events, i)
        out.append((events[j - 1].id, events[i].type, payload))
        i = j
    return out


# -- stored chunks ---------------------------------------------------------------------------

RAW = 0
ZLIB = 1


def encode_chunk(events: Iterable[LogEvent]) -> bytes:
    # Into one growing buffer: a temporary line per event (payload-sized, so in the same
    # allocator size classes as the log's own payloads) would fragment the heap.
    out = bytearray()
    for event in events:
        out += b"%d %s " % (event.id, event.type.encode())
        out += event.payload
        out += b"\n"
    return bytes(out)


def decode_chunk(data: bytes) -> list[LogEvent]:
    events = []
    for line in data.split(b"\n"):
        if not line:
            continue
        first = line.index(b" ")
        second = line.index(b" ", first + 1)
        events.append(
            LogEvent(int(line[:first]), line[first + 1 : second].decode(), line[second + 1 :])
        )
    return events


def compress_chunk(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def open_chunk(codec: int, data: bytes) -> list[LogEvent]:
    """The events of a stored chunk written with `codec` (RAW or ZLIB)."""
    if codec == ZLIB:
        data = zlib.decompress(data)
    elif codec != RAW:
        raise ValueError(f"unknown event chunk codec {codec}")
    return decode_chunk(data)
