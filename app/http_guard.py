"""Bound what a connection can make the server hold before the app sees a request: the size of
a request's head (request line and headers) and the time to receive a whole request.

uvicorn with httptools (what `uvicorn[standard]` picks) has neither: a client can send 100 MB
of headers (all kept in memory), or open a connection and send half a request and keep it open
forever. uvicorn has no setting for either (`h11_max_incomplete_event_size` exists only for
`--http h11`, whose own 16 KiB limit then applies to the head), so this module adds both to
uvicorn's protocol classes, from inside the app: `python -m uvicorn app.main:app` is guarded
with no flag to remember. uvicorn resolves its protocol class before it imports the app, so the
methods are wrapped on the classes themselves (`install`, called by `create_app`); connections
are made only after that. tests/unit/test_overrides.py checks the wrapping is in effect.

- Head larger than `MAX_HEADER_BYTES` (httptools): `431`, connection closed.
- A request not received whole `REQUEST_READ_TIMEOUT_S` after its connection opened (or after
  the previous response on a kept-alive connection): `408` if nothing was answered yet, and the
  connection is closed; an app waiting for the rest of the body sees `http.disconnect`. A request
  received whole is never timed out: a stream may last as long as its run.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class Limits:
    max_header_bytes = 64 * 1024
    read_timeout_s = 30.0


def _response(status: str, code: str, message: str) -> bytes:
    body = f'{{"error": {{"code": "{code}", "message": "{message}"}}}}'.encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


TOO_LARGE = _response(
    "431 Request Header Fields Too Large", "headers_too_large", "the request head is too large"
)
TIMED_OUT = _response(
    "408 Request Timeout", "request_timeout", "the request was not received in time"
)


def _arm(protocol: Any) -> None:
    timer = getattr(protocol, "_guard_timer", None)
    if timer is not None:
        timer.cancel()
    loop = asyncio.get_running_loop()
    protocol._guard_timer = loop.call_later(Limits.read_timeout_s, _expire, protocol)


def _disarm(protocol: Any) -> None:
    timer = getattr(protocol, "_guard_timer", None)
    if timer is not None:
        timer.cancel()
        protocol._guard_timer = None


def _expire(protocol: Any) -> None:
    """The deadline passed: close the connection unless its request was received whole."""
    protocol._guard_timer = None
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return
    cycle = protocol.cycle
    waiting = cycle is None or cycle.response_complete  # no request, or the next one's head
    if not waiting and not cycle.more_body:
        return  # received whole: the response may take as long as it needs
    if waiting or not cycle.response_started:
        transport.write(TIMED_OUT)
    transport.close()


def _wrap(cls: type, name: str, after: Callable[..., None], before: bool = False) -> None:
    original = getattr(cls, name)
    if getattr(original, "_guarded", False):
        return

    @functools.wraps(original)
    def method(self: Any, *args: Any) -> Any:
        if before:
            after(self, *args)
            return original(self, *args)
        result = original(self, *args)
        after(self, *args)
        return result

    method._guarded = True  # type: ignore[attr-defined]
    setattr(cls, name, method)


def _opened(protocol: Any, *_: Any) -> None:
    protocol._guard_head = 0
    protocol._guard_body = False
    _arm(protocol)


def _head_done(protocol: Any, *_: Any) -> None:
    protocol._guard_body = True


def _message_done(protocol: Any, *_: Any) -> None:
    protocol._guard_body = False
    protocol._guard_head = 0


def _lost(protocol: Any, *_: Any) -> None:
    _disarm(protocol)


def _guarded_data_received(original: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
    @functools.wraps(original)
    def data_received(self: Any, data: bytes) -> None:
        in_head = not getattr(self, "_guard_body", False)
        original(self, data)
        # Counted only while the head is incomplete after this chunk: a chunk that ends the
        # head and carries body bytes is not the head's.
        if in_head and not self._guard_body and not self.transport.is_closing():
            self._guard_head = getattr(self, "_guard_head", 0) + len(data)
            if self._guard_head > Limits.max_header_bytes:
                self.transport.write(TOO_LARGE)
                self.transport.close()

    data_received._guarded = True  # type: ignore[attr-defined]
    return data_received


def install(max_header_bytes: int, read_timeout_s: float) -> None:
    """Set the limits and wrap uvicorn's protocol classes (once; later calls set the limits)."""
    Limits.max_header_bytes = max_header_bytes
    Limits.read_timeout_s = read_timeout_s
    for cls in (HttpToolsProtocol, H11Protocol):
        _wrap(cls, "connection_made", _opened)
        _wrap(cls, "on_response_complete", _arm)
        _wrap(cls, "connection_lost", _lost, before=True)
    _wrap(HttpToolsProtocol, "on_headers_complete", _head_done, before=True)
    _wrap(HttpToolsProtocol, "on_message_complete", _message_done)
    if not getattr(HttpToolsProtocol.data_received, "_guarded", False):
        HttpToolsProtocol.data_received = _guarded_data_received(  # type: ignore[method-assign,assignment]
            HttpToolsProtocol.data_received
        )


def installed() -> bool:
    """Whether every wrapper is in effect (tests/unit/test_overrides.py)."""
    methods = [
        getattr(cls, name)
        for cls in (HttpToolsProtocol, H11Protocol)
        for name in ("connection_made", "on_response_complete", "connection_lost")
    ]
    methods += [
        HttpToolsProtocol.on_headers_complete,
        HttpToolsProtocol.on_message_complete,
        HttpToolsProtocol.data_received,
    ]
    return all(getattr(m, "_guarded", False) for m in methods)
