"""The SSE wire format, as pure functions (golden-bytes tested in tests/sse/test_encoder.py).

A frame is `id: N\\nevent: TYPE\\ndata: LINE\\n...\\n\\n`. Data with newlines becomes several
`data:` lines (a client joins them with `\\n`); `id` and `event` are stripped of CR/LF so a
value can never end a field early. Our own event data is compact JSON from orjson, which never
contains a raw newline, so `encode_json` is the fast path used for every event.
"""

from __future__ import annotations

from typing import Any

import orjson

PING = b": ping\n\n"


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


def encode_json(event_id: int, event: str, data: Any) -> bytes:
    """Encode one of our events: its data as one line of compact UTF-8 JSON."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event.encode(), dumps(data))


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_fallback)


def _fallback(value: Any) -> Any:
    """Anything orjson cannot encode natively (LangChain objects, sets, ...) as JSON-able data."""
    from app.runs.jsonable import to_jsonable

    converted = to_jsonable(value)
    if converted is value:
        return repr(value)
    return converted
