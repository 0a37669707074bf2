"""One conformance suite for every `CancelBroker` (app/engine/ports.py): what is published after
`start` reaches the handler, with the same arguments and in order; nothing reaches it before
`start` or after `close`.

Deliveries are awaited (bounded), never assumed to have happened when `publish` returns: a
Redis pub/sub broker delivers from its listener task. Each implementation is one entry of
`OPENERS`, an async context manager yielding a factory of new brokers (a Redis one: a client on
a test server, a fresh channel) and cleaning up after the test; a Redis broker must only pass
this suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from app.broker.local import LocalCancelBroker
from app.broker.redis import RedisCancelBroker
from app.engine.ports import CancelBroker
from tests.support.redis import REDIS_URL, key_prefix

BrokerFactory = Callable[[], CancelBroker]
Check = Callable[[BrokerFactory], Awaitable[None]]
Run = Callable[[Check], None]

DEADLINE_S = 5.0
# How long a broker is given to (wrongly) deliver a request it must drop.
SETTLE_S = 0.2


@asynccontextmanager
async def _local() -> AsyncIterator[BrokerFactory]:
    yield LocalCancelBroker


@asynccontextmanager
async def _redis() -> AsyncIterator[BrokerFactory]:
    with key_prefix() as (_, prefix):  # a channel of the test's own
        yield lambda: RedisCancelBroker(REDIS_URL, prefix)


OPENERS: dict[str, Callable[[], AbstractAsyncContextManager[BrokerFactory]]] = {
    "local": _local,
    "redis": _redis,
}


@pytest.fixture(params=list(OPENERS))
def make_broker(request: pytest.FixtureRequest) -> Run:
    """`make_broker(check)` runs `await check(new_broker)` in a fresh event loop."""
    opener = OPENERS[request.param]

    def run(check: Check) -> None:
        async def main() -> None:
            async with opener() as new_broker:
                await check(new_broker)

        asyncio.run(main())

    return run


class Handler:
    """A cancel handler that notes what it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    async def __call__(self, run_id: str, action: str) -> None:
        self.calls.append((run_id, action))
        self._changed.set()

    async def until(self, n: int) -> list[tuple[str, str]]:
        """The calls, once there are at least `n` (fails after DEADLINE_S)."""

        async def reach() -> None:
            while len(self.calls) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reach(), DEADLINE_S)
        return self.calls


REQUESTS = [
    ("run-1", "interrupt"),
    ("run-2", "rollback"),
    ("run-1", "rollback"),
    ("7c9e6679-7425-40de-944b-e07fc1f90ae7", "interrupt"),
    ("rün:ü/ß 🙂", "interrupt"),
]


def test_every_request_published_after_start_reaches_the_handler_in_order(
    make_broker: Run,
) -> None:
    async def check(new_broker: BrokerFactory) -> None:
        broker, handler = new_broker(), Handler()
        await broker.start(handler)
        try:
            for run_id, action in REQUESTS:
                await broker.publish(run_id, action)
            assert await handler.until(len(REQUESTS)) == REQUESTS
            await asyncio.sleep(SETTLE_S)
            assert handler.calls == REQUESTS  # each one once
        finally:
            await broker.close()

    make_broker(check)


def test_many_requests_arrive_in_order(make_broker: Run) -> None:
    async def check(new_broker: BrokerFactory) -> None:
        broker, handler = new_broker(), Handler()
        await broker.start(handler)
        try:
            sent = [(f"run-{i}", "rollback" if i % 3 else "interrupt") for i in range(200)]
            for run_id, action in sent:
                await broker.publish(run_id, action)
            assert await handler.until(len(sent)) == sent
        finally:
            await broker.close()

    make_broker(check)


def test_a_request_published_before_start_is_not_delivered(make_broker: Run) -> None:
    async def check(new_broker: BrokerFactory) -> None:
        broker, handler = new_broker(), Handler()
        await broker.publish("early", "interrupt")  # does not raise
        await broker.start(handler)
        try:
            await broker.publish("late", "rollback")
            assert await handler.until(1) == [("late", "rollback")]
            await asyncio.sleep(SETTLE_S)
            assert handler.calls == [("late", "rollback")]
        finally:
            await broker.close()

    make_broker(check)


def test_nothing_is_delivered_after_close(make_broker: Run) -> None:
    async def check(new_broker: BrokerFactory) -> None:
        broker, handler = new_broker(), Handler()
        await broker.start(handler)
        await broker.publish("before", "interrupt")
        assert await handler.until(1) == [("before", "interrupt")]
        await broker.close()
        await broker.publish("after", "rollback")
        await asyncio.sleep(SETTLE_S)
        assert handler.calls == [("before", "interrupt")]

    make_broker(check)
