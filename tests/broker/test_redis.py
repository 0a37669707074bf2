"""The Redis cancel broker when Redis goes away (a throwaway `redis-server`, killed and started
again): the listener subscribes again, with growing waits while it cannot, and delivers what is
published once it is back."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from app.broker.redis import RETRY_FIRST_S, RedisCancelBroker
from tests.conformance.test_cancel_broker import Handler
from tests.support.redis_server import RedisServer

DEADLINE_S = 10.0
PREFIX = "t"


def test_the_listener_gets_requests_again_after_a_restart(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:

        async def main() -> None:
            owner, sender, handler = (
                RedisCancelBroker(server.url, PREFIX),
                RedisCancelBroker(server.url, PREFIX),
                Handler(),
            )
            await owner.start(handler)
            try:
                await sender.publish("before", "interrupt")
                assert await handler.until(1) == [("before", "interrupt")]
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)

                # Pub/sub keeps nothing for a listener that is away: publish until it is back.
                deadline = time.monotonic() + DEADLINE_S
                sent = 0
                while len(handler.calls) == 1:
                    assert time.monotonic() < deadline, "the listener did not subscribe again"
                    try:
                        await sender.publish(f"after-{sent}", "rollback")
                        sent += 1
                    except RedisError:
                        pass  # the sender's own connection was dropped too
                    await asyncio.sleep(0.02)
                await sender.publish("last", "interrupt")
                calls = await handler.until(len(handler.calls) + 1)
                while calls[-1] != ("last", "interrupt"):
                    calls = await handler.until(len(calls) + 1)
                first = int(calls[1][0].removeprefix("after-"))
                assert calls[1:] == [
                    *((f"after-{i}", "rollback") for i in range(first, sent)),
                    ("last", "interrupt"),
                ]
            finally:
                await owner.close()
                await sender.close()

        asyncio.run(main())


def test_the_listener_waits_longer_each_time_it_cannot_subscribe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No tight loop while Redis is down: the attempts are spaced by doubling waits."""
    caplog.set_level(logging.INFO, logger="app.broker.redis")
    with RedisServer(tmp_path) as server:

        async def main() -> None:
            broker = RedisCancelBroker(server.url, PREFIX)
            await broker.start(Handler())
            try:
                await asyncio.to_thread(server.stop)
                down_at = time.monotonic()
                deadline = down_at + DEADLINE_S

                def attempts() -> int:
                    return sum("retrying" in r.getMessage() for r in caplog.records)

                while attempts() < 4:
                    assert time.monotonic() < deadline, "the listener stopped retrying"
                    await asyncio.sleep(0.01)
                # the drop, then failed attempts after waits of 1, 2 and 4 times the first
                assert time.monotonic() - down_at >= RETRY_FIRST_S * 7 * 0.9
            finally:
                await broker.close()

        asyncio.run(main())
