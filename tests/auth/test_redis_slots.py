"""The per-key slots in Redis (app/auth/redis_slots.py), as two worker processes would use them:
one count per key and kind shared by both, taken atomically, leased (a worker that stops
renewing loses its slots within the lease), released at once, and refused when Redis does not
answer. On the machine's Redis, each test under its own prefix."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest
from redis.asyncio import Redis

from app.auth.redis_slots import RedisSlots
from app.engine.admission import Release
from app.engine.errors import StoreUnavailable
from tests.support.fake_openai import free_port
from tests.support.redis import REDIS_URL, key_prefix

RENEW_S = 0.3


def _client(url: str = REDIS_URL) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)


@contextlib.asynccontextmanager
async def _worker(prefix: str, url: str = REDIS_URL) -> AsyncIterator[RedisSlots]:
    """One worker's slots, renewing while open, with a client of its own."""
    client = _client(url)
    try:
        async with RedisSlots(client, prefix, RENEW_S) as slots:
            yield slots
    finally:
        await client.aclose()


async def _until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> float:
    """Poll `check` until it holds (bounded); the seconds it took."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, "never happened"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _server_ms(conn: Redis) -> int:
    seconds, micros = await conn.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_two_workers_share_each_keys_count_and_never_both_take_the_last() -> None:
    with key_prefix() as (conn, prefix):

        async def scenario() -> None:
            async with _worker(prefix) as one, _worker(prefix) as two:
                racing = [(w, w.take("runs", "a", 3)) for _ in range(5) for w in (one, two)]
                got = await asyncio.gather(*(take for _, take in racing))
                held = [(w, r) for (w, _), r in zip(racing, got, strict=True) if r is not None]
                assert len(held) == 3  # of ten racing, on two workers
                assert await one.take("streams", "a", 3) is not None  # another kind
                assert await two.take("runs", "b", 3) is not None  # another key
                assert await two.take("runs", "a", 3) is None
                owner, release = held[0]
                release()
                release()  # a second release frees nothing more
                taker = two if owner is one else one
                # the other worker sees it free once the owner's removal went out
                await _until(lambda: _taken(taker.take("runs", "a", 3)), within=2.0)
                assert await owner.take("runs", "a", 3) is None
                assert await taker.take("runs", "a", 3) is None

        asyncio.run(scenario())
        # every worker gave back what it held when it stopped: no key is left
        assert list(conn.scan_iter(f"{prefix}*")) == []


def test_a_slot_this_worker_freed_is_free_for_its_next_request_at_once() -> None:
    """The release is sync and its removal goes out later; a take right after it, on the same
    worker, must not be refused for the slot just freed."""
    with key_prefix() as (_, prefix):

        async def scenario() -> None:
            async with _worker(prefix) as slots:
                for _ in range(20):
                    release = await slots.take("runs", "a", 1)
                    assert release is not None
                    release()

        asyncio.run(scenario())


def test_a_worker_that_stops_renewing_loses_its_slots_within_the_lease() -> None:
    """A dead worker (here: slots never entered, so never renewed) holds nothing past its
    lease; a live one keeps its slots past theirs, renewed."""
    with key_prefix() as (_, prefix):

        async def scenario() -> None:
            conn = _client()
            dead = RedisSlots(_client(), prefix, RENEW_S)
            try:
                async with _worker(prefix) as live, _worker(prefix) as other:
                    assert await live.take("runs", "a", 2) is not None
                    assert await dead.take("runs", "a", 2) is not None
                    key = live.key("runs", "a")
                    first = await _scores(conn, key)
                    assert await other.take("runs", "a", 2) is None
                    # freed within the lease of the dead one (plus polling)
                    took = await _until(lambda: _taken(other.take("runs", "a", 2)))
                    assert took <= dead.lease_s + 1.0, took
                    # the live one's first lease is over, and it still holds its slot
                    now_held = await _scores(conn, key)
                    (mine,) = (m for m in first if m in now_held)
                    await _until(
                        lambda: _passed(conn, first[mine]),
                        within=live.lease_s + 2.0,
                    )
                    assert await other.take("runs", "a", 2) is None
                    assert (await _scores(conn, key))[mine] > first[mine]
            finally:
                await conn.aclose()
                await dead._client.aclose()

        asyncio.run(scenario())


async def _taken(attempt: Awaitable[Release | None]) -> bool:
    return await attempt is not None


async def _scores(conn: Redis, key: str) -> dict[bytes, float]:
    """The set's members and their expiries (ms)."""
    pairs = cast(list[tuple[bytes, float]], await conn.zrange(key, 0, -1, withscores=True))
    return dict(pairs)


async def _passed(conn: Redis, expiry_ms: float) -> bool:
    return await _server_ms(conn) > expiry_ms


def test_unreachable_redis_refuses_as_store_unavailable() -> None:
    """Fail closed: a count that cannot be read lets no request through."""
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> StoreUnavailable:
        async with _worker("x", url) as slots:
            with pytest.raises(StoreUnavailable) as caught:
                await slots.take("streams", "a", 5)
            return caught.value

    exc = asyncio.run(scenario())
    assert exc.code == "store_unavailable" and "no new streams" in exc.message
    assert "127.0.0.1" not in exc.message


class _Cuttable:
    """A TCP relay to the machine's Redis that can be cut: while cut, every connection through
    it is closed at once (Redis unreachable for this worker, its data intact)."""

    def __init__(self) -> None:
        self.cut = False
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> _Cuttable:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sever()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def sever(self) -> None:
        self.cut = True
        for writer in list(self._links):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links -= {writer, up_writer}


def test_a_release_that_fails_is_retried_until_redis_answers() -> None:
    """Redis unreachable when a slot is released: the removal is kept and sent again on a later
    beat, so the slot is free again well before its lease would have run out."""
    assert REDIS_URL == "redis://127.0.0.1:6379/0", "the relay goes to the machine's Redis"
    with key_prefix() as (_, prefix):

        async def scenario() -> None:
            conn = _client()
            try:
                async with _Cuttable() as relay:
                    client = _client(relay.url)
                    slots = RedisSlots(client, prefix, renew_s=1.0)  # a lease of 3 s
                    async with slots:
                        release = await slots.take("runs", "a", 1)
                        assert release is not None
                        key = slots.key("runs", "a")
                        (expiry,) = (await _scores(conn, key)).values()
                        relay.sever()
                        release()  # its removal fails: Redis is cut off
                        with pytest.raises(StoreUnavailable):
                            await slots.take("runs", "b", 1)
                        assert await conn.zcard(key) == 1
                        relay.cut = False
                        await _until(lambda: _empty(conn, key), within=slots.lease_s)
                        assert await _server_ms(conn) < expiry  # removed, not expired
                    await client.aclose()
            finally:
                await conn.aclose()

        asyncio.run(scenario())


async def _empty(conn: Redis, key: str) -> bool:
    return await conn.zcard(key) == 0
