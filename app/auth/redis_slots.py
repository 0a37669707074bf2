"""The per-key slots (app/auth/slots.py) in Redis, shared by every worker: one sorted set per
key and kind, `{prefix}:slots:{kind}:{tenant}`, member = one slot (a random id), score = the
time it expires (Redis's clock, milliseconds).

Design record
- Taking is one Lua script: drop the expired members (ZREMRANGEBYSCORE) and the members this
  worker has released but not yet removed, count (ZCARD), add one if under the limit. Atomic,
  so two workers never both take the last slot. The `limits` library has no such counter (it
  offers rate windows only: moving, fixed, sliding), hence our own script on redis-py.
- Leases: a slot expires `LEASE_RENEWALS` renew periods after it was last renewed, and every
  `renew_s` (WORKER_HEARTBEAT_S) the worker renews all it holds in one pipeline (one script per
  key: ZADD every member at the new expiry, PEXPIRE the key). A worker that dies (SIGKILL)
  stops renewing: its slots count until they expire, at most `lease_s` after its death. The
  set itself expires with its last lease, so keys with nothing held take no memory. Why the
  server's clock: workers' clocks differ, Redis's is one.
- A renewal re-adds a member that is gone (Redis restarted empty, or lost for longer than a
  lease): the run or stream is still live here, so it counts again. A key may then be over its
  limit until enough of its slots end; nothing new is let in meanwhile.
- The release is sync (the engine's and the stream's ends cannot await): it moves the member
  from held to released and wakes the loop, which removes it (ZREM) at once. A removal that
  fails stays released and is retried on every beat (the member meanwhile is no longer
  renewed, so it expires within `lease_s` anyway). A take by this worker first removes the
  key's released members inside its script: a slot this worker freed is free for its next
  request, without waiting for the loop. Removals and renewals go out under one lock, so a
  renewal never re-adds a slot removed after it was sent.
- Redis unreachable: `take` raises `StoreUnavailable` (503), never lets a request through
  unlimited. A take whose answer was lost (timeout, cancellation) is released as well: it may
  have been added.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from types import TracebackType

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.engine.admission import Release
from app.engine.errors import StoreUnavailable

log = logging.getLogger("app.auth.slots")

LEASE_RENEWALS = 3
"""Renew periods a slot lives without being renewed."""

_NOW_MS = "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS[1]: the set; ARGV: member, most, lease ms, this worker's released members of the set...
TAKE = (
    _NOW_MS
    + """
for i = 4, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then return {0, held} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, held + 1}
"""
)

# KEYS[1]: the set; ARGV: lease ms, the members this worker holds in it...
RENEW = (
    _NOW_MS
    + """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
"""
)


class RedisSlots:
    """The slots of every worker sharing `prefix`; enter it to start the renewals."""

    def __init__(self, client: Redis, prefix: str, renew_s: float) -> None:
        self._client = client
        self._prefix = f"{prefix}:slots"
        self.renew_s = renew_s
        self.lease_s = LEASE_RENEWALS * renew_s
        self._lease_ms = max(1, round(self.lease_s * 1000))
        self._take_script = client.register_script(TAKE)
        self._renew_script = client.register_script(RENEW)
        self._held: dict[str, set[str]] = {}  # set key -> members this worker holds
        self._released: dict[str, set[str]] = {}  # set key -> members still to remove
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def key(self, kind: str, tenant: str) -> str:
        return f"{self._prefix}:{kind}:{tenant}"

    async def __aenter__(self) -> RedisSlots:
        self._task = asyncio.create_task(self._loop(), name="limit-slots")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop renewing and give back whatever is still held (the process is going away)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        for key, members in self._held.items():
            self._released.setdefault(key, set()).update(members)
        self._held.clear()
        try:
            await self._sync(renew=False)
        except RedisError as exc:
            log.warning(
                "limit slots not given back (%s); they expire within %.1fs", _why(exc), self.lease_s
            )

    async def take(self, kind: str, tenant: str, most: int) -> Release | None:
        key = self.key(kind, tenant)
        member = uuid.uuid4().hex
        if not self._released.get(key):
            return await self._take(kind, key, member, most, set())
        async with self._lock:  # after a removal in flight, so none is re-added behind it
            return await self._take(kind, key, member, most, self._released.pop(key, set()))

    async def _take(
        self, kind: str, key: str, member: str, most: int, freed: set[str]
    ) -> Release | None:
        try:
            taken, _ = await self._take_script(
                keys=[key], args=[member, most, self._lease_ms, *freed]
            )
        except BaseException as exc:
            self._released.setdefault(key, set()).update({*freed, member})
            self._wake.set()
            if isinstance(exc, RedisError):
                raise StoreUnavailable(
                    f"no new {kind}: the per-key limit storage is unreachable"
                    f" ({type(exc).__name__})"
                ) from None
            raise
        if not taken:
            return None
        self._held.setdefault(key, set()).add(member)
        return self._release_of(key, member)

    def _release_of(self, key: str, member: str) -> Release:
        def release() -> None:
            held = self._held.get(key)
            if held is None or member not in held:
                return
            held.discard(member)
            if not held:
                del self._held[key]
            self._released.setdefault(key, set()).add(member)
            self._wake.set()

        return release

    async def _loop(self) -> None:
        due = time.monotonic() + self.renew_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            renew = time.monotonic() >= due
            if renew:
                due = time.monotonic() + self.renew_s
            try:
                await self._sync(renew)
            except Exception as exc:  # Redis away (or a bug): this beat is lost, not the loop
                log.warning(
                    "limit slots not renewed or freed (%s); next try in %.1fs",
                    _why(exc),
                    self.renew_s,
                )

    async def _sync(self, renew: bool) -> None:
        """Remove the released members; with `renew`, renew the held ones: one pipeline."""
        async with self._lock:
            freed = {key: set(members) for key, members in self._released.items() if members}
            held = {key: sorted(members) for key, members in self._held.items()} if renew else {}
            if not freed and not held:
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for key, members in freed.items():
                    pipe.zrem(key, *members)
                for key, holding in held.items():
                    await self._renew_script(
                        keys=[key], args=[self._lease_ms, *holding], client=pipe
                    )
                await pipe.execute()
            for key, members in freed.items():
                left = self._released.get(key, set()) - members
                if left:
                    self._released[key] = left
                else:
                    self._released.pop(key, None)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
