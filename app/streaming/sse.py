"""The streaming response: sse-starlette's, with the subscriber's own pings and a quiet send
timeout.

Design record
- Its own ping task is off (`ping=0`): the subscriber sends the encoder's ping itself, between
  frames. A ping from another task could land between two slices of one big frame and break it.
- A send that takes no bytes for SEND_TIMEOUT_S raises sse-starlette's SendTimeoutError; the
  response ends, the connection is closed and the drop is logged without a traceback (the
  client can reconnect with Last-Event-ID).
- `on_done` is called once the response has ended, however it ended (the stream's end, the
  client gone, a send timeout, a cancel), even if the body was never started: a client that
  vanished before the first frame is never iterated for, so the subscriber's own `finally`
  cannot be what frees a per-key stream slot.
- `_send_with_timeout` overrides a private method of sse-starlette (capped in pyproject.toml):
  the same behaviour on `asyncio.timeout` instead of an anyio cancel scope, paid on every send
  (docs/perf/0006-per-send-timeout.md). tests/unit/test_overrides.py shows the override is
  the one that runs; tests/streaming/test_sse_response.py drives the timeout, disconnect and
  ping branches in-process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from sse_starlette.sse import AppStatus, EventSourceResponse, SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from app.streaming.subscriber import FanOut

log = logging.getLogger("app.streaming")


@dataclass
class StreamWatch:
    """Whether a stream sent its run's end (`complete`, given to `FanOut.frames`); a stream that
    ends without it is counted in `fanout.disconnects` by why: `send_timeout`, `shutdown` (cut by
    the shutdown), else `client_gone`."""

    fanout: FanOut
    completed: bool = False

    def complete(self) -> None:
        self.completed = True


class StreamResponse(EventSourceResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        send_timeout_s: float,
        headers: Mapping[str, str] | None = None,
        on_done: Callable[[], None] | None = None,
        watch: StreamWatch | None = None,
    ) -> None:
        super().__init__(content, headers=headers, ping=0, send_timeout=send_timeout_s)
        self._on_done = on_done
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # With its ping task off, only the data send can time out, and sse-starlette unwraps a
        # one-exception group: a bare SendTimeoutError is all that can come here.
        timed_out = False
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            timed_out = True
            self._dropped(scope)
        finally:
            watch = self._watch
            if watch is not None and not watch.completed:
                if timed_out:
                    watch.fanout.disconnected("send_timeout")
                elif watch.fanout.stopping or AppStatus.should_exit:
                    watch.fanout.disconnected("shutdown")
                else:
                    watch.fanout.disconnected("client_gone")
            if self._on_done is not None:
                self._on_done()

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
            return
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError() from None

    def _dropped(self, scope: Scope) -> None:
        log.warning(
            "dropped client %s: it took no bytes for %ss", scope.get("client"), self.send_timeout
        )
