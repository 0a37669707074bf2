"""The fake OpenAI upstream in its own process, so its CPU is never counted as ours.

`python -m bench.upstream PORT` serves tests/support/fake_openai.py's `FakeOpenAI` with two
additions for the benchmark, both outside the fake itself:

- `GET /stats`: the fake's counters as JSON (`abandoned_at` is `time.monotonic()`, which is
  system-wide on Linux, so the benchmark can compare it with its own clock);
- a request whose prompt holds `[[trace]]` (a directive the fake ignores) has the time of every
  body chunk it sends recorded; `GET /stats` returns the last such request's times as `trace`,
  so the cancel case can count the tokens produced after its cancel.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import uvicorn

from tests.support.fake_openai import FakeOpenAI, Message, Receive, Scope, Send

TRACE = b"[[trace]]"


class TracedUpstream:
    """The fake's ASGI app plus `/stats` and `[[trace]]` recording."""

    def __init__(self) -> None:
        self.fake = FakeOpenAI(tokens=20)
        self.trace: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            await _json(send, self._stats())
            return
        if scope["type"] != "http":
            await self.fake.app(scope, receive, send)
            return
        traced = False

        async def spy_receive() -> Message:
            nonlocal traced
            message = await receive()
            if TRACE in message.get("body", b""):
                traced = True
                self.trace = []
            return message

        async def spy_send(message: Message) -> None:
            if traced and message["type"] == "http.response.body":
                self.trace.append(time.monotonic())
            await send(message)

        await self.fake.app(scope, spy_receive, spy_send)

    def _stats(self) -> dict[str, Any]:
        s = self.fake.snapshot()
        return {
            "started": s.started,
            "completed": s.completed,
            "abandoned": s.abandoned,
            "active": s.active,
            "abandoned_at": s.abandoned_at[-50:],
            "trace": self.trace,
        }


async def _json(send: Send, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(
        TracedUpstream(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        backlog=4096,
        interface="asgi3",
    )


if __name__ == "__main__":
    main()
