"""The cancel broker on Redis pub/sub: a cancel asked on any worker reaches the run's owner.

Design record
- One channel, `<prefix>:cancel`; a message is `<action> <run_id>` (an action is one word, a
  run id may hold anything). Every worker subscribes and its handler gets every request: the
  manager ignores runs it does not own. Why one channel and not one per run: a subscription
  per live run would cost a round trip per run start, for a message that is rare.
- `start` returns once the subscription is confirmed, so a request published after it is
  delivered. A listener task calls the handler for each message, in order.
- Pub/sub keeps nothing: a request published while a worker's connection is down is lost to
  it. The listener reconnects with bounded backoff (never a tight loop); the run store's cancel
  requests (`RunStore.request_cancel`) are the owner's fallback for what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.engine.ports import CancelHandler

log = logging.getLogger("app.broker.redis")

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
SUBSCRIBE_TIMEOUT_S = 5.0
DOWN = (RedisError, OSError)


class RedisCancelBroker:
    def __init__(self, url: str, key_prefix: str) -> None:
        self._channel = f"{key_prefix}:cancel"
        self._client = aredis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,  # the listener blocks on its socket: notice a dead peer
            retry=Retry(NoBackoff(), 0),  # the listener reconnects itself, with its own backoff
        )
        self._handler: CancelHandler | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, handler: CancelHandler) -> None:
        pubsub = await self._subscribe()
        self._handler = handler
        self._listener = asyncio.create_task(self._listen(pubsub), name="redis-cancel-listener")

    async def publish(self, run_id: str, action: str) -> None:
        if self._closed:
            return
        await self._client.publish(self._channel, f"{action} {run_id}".encode())

    async def close(self) -> None:
        self._closed = True
        self._handler = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait({listener})
        await self._client.aclose()

    async def _subscribe(self) -> PubSub:
        """A subscription Redis has confirmed (a request published after this reaches it)."""
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                while True:
                    message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
                    if message is not None and message["type"] == "subscribe":
                        return pubsub
        except BaseException:
            await _discard(pubsub)
            raise

    async def _listen(self, pubsub: PubSub | None) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe()
                    log.warning("cancel broker: subscribed again to %s", self._channel)
                delay = RETRY_FIRST_S
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message["type"] == "message":
                        await self._deliver(message["data"])
            except (*DOWN, TimeoutError) as exc:
                level = logging.WARNING if pubsub is not None else logging.INFO
                log.log(level, "cancel broker: %s: %s; retrying in %.2f s", type(exc).__name__,
                        exc, delay)  # fmt: skip
                if pubsub is not None:
                    await _discard(pubsub)
                    pubsub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except BaseException:
                if pubsub is not None:
                    await _discard(pubsub)
                raise

    async def _deliver(self, data: bytes) -> None:
        action, _, run_id = data.decode(errors="replace").partition(" ")
        handler = self._handler
        if handler is None or not run_id:
            return
        try:
            await handler(run_id, action)
        except Exception:
            log.exception("cancel broker: handler failed for %s %s", action, run_id)


async def _discard(pubsub: PubSub) -> None:
    with contextlib.suppress(*DOWN):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
