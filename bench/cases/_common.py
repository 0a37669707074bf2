"""What every case shares: the run context, an event loop runner, request bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from bench import client
from bench.harness import Process, Upstream

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """One benchmark run: the shared fake upstream, and whether this is the short form."""

    upstream: Upstream
    quick: bool = False

    def pick(self, full: T, quick: T) -> T:
        return quick if self.quick else full


def aio(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop (cheap for the client side of a thousand streams)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def chat(query: str, **extra: Any) -> dict[str, Any]:
    return {"input": {"query": query}, **extra}


async def post_stream(server: Process, body: dict[str, Any], **kwargs: Any) -> client.StreamResult:
    """`POST /graphs/chat/stream` on the service and read the whole stream."""
    return await client.stream(server.port, "POST", "/graphs/chat/stream", body, **kwargs)


async def concurrent(n: int, make: Any) -> tuple[float, list[client.StreamResult]]:
    """Run `make()` (a coroutine factory) `n` times at once; wall seconds and the results."""
    started = time.monotonic()
    results: list[client.StreamResult] = await asyncio.gather(*(make() for _ in range(n)))
    return time.monotonic() - started, results
