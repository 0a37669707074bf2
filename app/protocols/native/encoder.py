"""Our SSE wire format, as pure functions (golden-bytes tested in tests/protocols/native/).

A frame is `id: N\\nevent: TYPE\\ndata: LINE\\n...\\n\\n`. Data with newlines becomes several
`data:` lines (a client joins them with `\\n`); `id` and `event` are stripped of CR/LF so a
value can never end a field early. An event's payload is compact JSON (app/engine/codec.py),
which never holds a raw newline, so `NativeEncoder.frame` is one `data:` line, the fast path
used for every event.
"""

from __future__ import annotations

from typing import Any

from app.engine.codec import dumps
from app.engine.events import INTERNAL, PUBLIC

PING = b": ping\n\n"
HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
VISIBLE: frozenset[str] = PUBLIC
"""What this protocol shows: API.md's table; the engine's internal events are never sent."""
assert not VISIBLE & INTERNAL


def _field(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


def encode(data: str, *, event: str | None = None, event_id: int | str | None = None) -> bytes:
    """Encode one frame of arbitrary text data."""
    parts: list[str] = []
    if event_id is not None:
        parts.append(f"id: {_field(str(event_id))}\n")
    if event is not None:
        parts.append(f"event: {_field(event)}\n")
    for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def frame(event_id: int, event_type: str, payload: bytes) -> bytes:
    """One of our events: its payload (compact JSON, one line) as the data line."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode(), payload)


def encode_json(event_id: int, event_type: str, data: Any) -> bytes:
    return frame(event_id, event_type, dumps(data))


class NativeEncoder:
    """The subscriber's `Encoder` for our SSE vocabulary."""

    key = "native"
    ping = PING

    @staticmethod
    def frame(event_id: int, event_type: str, payload: bytes) -> bytes:
        return frame(event_id, event_type, payload)

    @staticmethod
    def parts(event_id: int, event_type: str, payload: bytes) -> tuple[bytes, bytes, bytes]:
        return b"id: %d\nevent: %s\ndata: " % (event_id, event_type.encode()), payload, b"\n\n"
