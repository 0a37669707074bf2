"""Per-key limits, unit level: each tenant has its own slots and window, a refused request
takes nothing, and the Redis storage shares one window between two processes' limiters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from app.auth.slots import LocalSlots
from app.auth.throttle import Admission, KeyLimits, LimitExceeded, Quota
from app.backends import open_limit_stores
from app.engine.admission import Release
from app.engine.errors import StoreUnavailable
from app.settings import Settings
from tests.support.fake_openai import free_port
from tests.support.redis import REDIS_URL, key_prefix


def _limits(storage: Storage | None = None, rate: str | None = None, **kw: Any) -> KeyLimits:
    return KeyLimits(
        rate=parse(rate) if rate else None,
        storage=storage or (MemoryStorage() if rate else None),
        **kw,
    )


async def _admit(limits: KeyLimits, tenant: str) -> tuple[Release, Quota | None]:
    admission = limits.admission(tenant)
    assert isinstance(admission, Admission)
    release = await admission()
    return release, admission.quota


def _refused(code: str, attempt: Callable[[], Awaitable[object]]) -> LimitExceeded:
    async def run() -> LimitExceeded:
        with pytest.raises(LimitExceeded) as caught:
            await attempt()
        return caught.value

    exc = asyncio.run(run())
    assert exc.code == code
    return exc


def test_no_limit_set_asks_nothing() -> None:
    limits = _limits()
    assert limits.admission("a") is None
    assert asyncio.run(limits.open_stream("a")) is None
    assert asyncio.run(limits.quota("a")) is None


def _held(limits: KeyLimits, kind: str, tenant: str) -> int:
    assert isinstance(limits.slots, LocalSlots)
    return limits.slots.held(kind, tenant)


def test_run_slots_are_per_tenant_and_freed_by_the_release() -> None:
    limits = _limits(max_runs=1)

    async def scenario() -> None:
        release_a, _ = await _admit(limits, "a")
        with pytest.raises(LimitExceeded) as full:
            await _admit(limits, "a")
        assert full.value.code == "too_many_runs" and full.value.retry_after_s == 1.0
        release_b, _ = await _admit(limits, "b")  # another tenant: its own slot
        assert (_held(limits, "runs", "a"), _held(limits, "runs", "b")) == (1, 1)
        release_a()
        release_a()  # a second release frees nothing more
        assert _held(limits, "runs", "a") == 0 and _held(limits, "runs", "b") == 1
        again, _ = await _admit(limits, "a")
        again()
        release_b()
        assert isinstance(limits.slots, LocalSlots)
        assert limits.slots.counts == {}  # tenants with nothing in progress take no memory

    asyncio.run(scenario())


def test_stream_slots_are_per_tenant_and_freed_by_the_release() -> None:
    limits = _limits(max_streams=2)
    a1, a2 = asyncio.run(limits.open_stream("a")), asyncio.run(limits.open_stream("a"))
    exc = _refused("too_many_streams", lambda: limits.open_stream("a"))
    assert exc.retry_after_s == 1.0 and exc.quota is None
    b = asyncio.run(limits.open_stream("b"))
    assert a1 and a2 and b
    a1()
    assert _held(limits, "streams", "a") == 1 and _held(limits, "streams", "b") == 1
    assert asyncio.run(limits.open_stream("a")) is not None


def test_rate_window_is_per_tenant_with_its_quota() -> None:
    limits = _limits(rate="2/minute")

    async def scenario() -> tuple[list[Quota | None], LimitExceeded, Quota | None]:
        quotas = [(await _admit(limits, "a"))[1], (await _admit(limits, "a"))[1]]
        with pytest.raises(LimitExceeded) as over:
            await _admit(limits, "a")
        return quotas, over.value, (await _admit(limits, "b"))[1]

    quotas, over, other = asyncio.run(scenario())
    assert [q.remaining for q in quotas if q] == [1, 0]
    assert all(q and q.limit == 2 and 59 <= q.reset_s <= 60 for q in quotas)
    assert over.code == "rate_limited" and over.quota is not None
    assert over.quota.remaining == 0
    assert over.retry_after_s is not None and 1 <= over.retry_after_s <= 60
    assert other is not None and other.remaining == 1  # tenant b has its own window


def test_a_request_refused_for_its_run_slot_takes_no_rate_token() -> None:
    limits = _limits(rate="2/minute", max_runs=1)

    async def scenario() -> Quota | None:
        first, _ = await _admit(limits, "a")
        with pytest.raises(LimitExceeded) as full:
            await _admit(limits, "a")
        assert full.value.code == "too_many_runs"
        assert full.value.quota is not None and full.value.quota.remaining == 1
        first()
        _, quota = await _admit(limits, "a")  # the second token: the refusal took none
        return quota

    quota = asyncio.run(scenario())
    assert quota is not None and quota.remaining == 0


def test_a_request_refused_by_the_rate_gives_its_run_slot_back() -> None:
    limits = _limits(rate="1/minute", max_runs=5)

    async def scenario() -> None:
        await _admit(limits, "a")
        with pytest.raises(LimitExceeded):
            await _admit(limits, "a")

    asyncio.run(scenario())
    assert _held(limits, "runs", "a") == 1


def _settings(prefix: str, url: str = REDIS_URL, rate: str = "3/minute") -> Settings:
    return Settings(
        _env_file=None,
        rate_limit_runs=rate,
        redis_url=url,
        redis_key_prefix=prefix,
    )


def test_redis_storage_shares_each_tenants_window_between_workers() -> None:
    """Two limiters on one Redis, as two worker processes would be (each with the storage the
    service opens for REDIS_URL): one window per tenant, kept under REDIS_KEY_PREFIX."""
    with key_prefix() as (conn, prefix):

        async def scenario() -> tuple[list[int], LimitExceeded, Quota | None]:
            settings = _settings(prefix)
            async with open_limit_stores(settings) as a, open_limit_stores(settings) as b:
                assert isinstance(a.rate, RedisStorage) and isinstance(b.rate, RedisStorage)
                one, two = (
                    KeyLimits(rate=settings.run_rate, storage=a.rate),
                    KeyLimits(rate=settings.run_rate, storage=b.rate),
                )
                left = []
                for limits in (one, two, one):
                    _, quota = await _admit(limits, "a")
                    assert quota is not None
                    left.append(quota.remaining)
                with pytest.raises(LimitExceeded) as over:
                    await _admit(two, "a")
                return left, over.value, (await _admit(two, "b"))[1]

        left, over, other = asyncio.run(scenario())
        assert left == [2, 1, 0]
        assert over.code == "rate_limited" and over.quota and over.quota.remaining == 0
        assert other is not None and other.remaining == 2
        keys = sorted(k.decode() for k in conn.scan_iter(f"{prefix}*"))
        assert len(keys) == 2 and all(k.startswith(f"{prefix}:limits") for k in keys)


def test_unreachable_redis_refuses_run_creation_as_store_unavailable() -> None:
    """Fail closed: without its storage the rate cannot be kept, so no run is let through."""
    settings = _settings("x", f"redis://127.0.0.1:{free_port()}/0")

    async def scenario() -> StoreUnavailable:
        async with open_limit_stores(settings) as stores:
            limits = KeyLimits(rate=settings.run_rate, storage=stores.rate)
            with pytest.raises(StoreUnavailable) as caught:
                await _admit(limits, "a")
            return caught.value

    exc = asyncio.run(scenario())
    assert exc.code == "store_unavailable" and "rate limit storage" in exc.message
    assert "127.0.0.1" not in exc.message
