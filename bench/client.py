"""A lean asyncio SSE client on raw sockets, so a thousand streams cost the benchmark little.

It speaks HTTP/1.0 (the server then sends the body plain, no chunked encoding, and closes the
connection at the end) and does not parse JSON: it counts `token` frames and notes when they
arrive, which is all the cases need. A frame is counted once it is complete (its blank line has
arrived), so a frame split across two reads is never miscounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

_TOKEN = b"event: token\n"
_END = b"event: end\n"


@dataclass
class StreamResult:
    """What one client saw: times are `time.monotonic()`."""

    status: int = 0
    sent_at: float = 0.0
    first_token_at: float | None = None
    end_at: float | None = None
    closed_at: float = 0.0
    token_frames: int = 0
    token_arrivals: list[float] = field(default_factory=list)
    ended: bool = False
    end_data: dict[str, Any] = field(default_factory=dict)

    @property
    def gaps_ms(self) -> list[float]:
        """Times between consecutive token frames' arrivals, in milliseconds."""
        t = self.token_arrivals
        return [(b - a) * 1000 for a, b in itertools.pairwise(t)]


async def stream(
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    record_arrivals: bool = False,
    first_token: asyncio.Event | None = None,
    headers: dict[str, str] | None = None,
) -> StreamResult:
    """Open one SSE stream on 127.0.0.1:`port` and read it to the end."""
    result = StreamResult()
    payload = json.dumps(body).encode() if body is not None else b""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        result.sent_at = time.monotonic()
        writer.write(head + payload)
        header = await reader.readuntil(b"\r\n\r\n")
        result.status = int(header.split(b" ", 2)[1])
        pending = b""
        while chunk := await reader.read(1 << 18):
            buf = pending + chunk if pending else chunk
            cut = buf.rfind(b"\n\n") + 2
            if cut == 1:
                pending = buf
                continue
            complete, pending = buf[:cut], buf[cut:]
            tokens = complete.count(_TOKEN)
            now = time.monotonic()
            if tokens:
                result.token_frames += tokens
                if result.first_token_at is None:
                    result.first_token_at = now
                    if first_token is not None:
                        first_token.set()
                if record_arrivals:
                    result.token_arrivals.extend([now] * tokens)
            if (at := complete.find(_END)) >= 0:
                result.ended = True
                result.end_at = now
                result.end_data = _data(complete[at:])
        result.closed_at = time.monotonic()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return result


def _data(frame: bytes) -> dict[str, Any]:
    for line in frame.split(b"\n"):
        if line.startswith(b"data: "):
            data: dict[str, Any] = json.loads(line[6:])
            return data
    return {}
