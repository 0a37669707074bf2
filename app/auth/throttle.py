"""Per-key limits: how many runs a key may create in a window, how many of its runs may be in
progress, and how many of its streams may be open at once.

Design record
- "Key" is the tenant the request belongs to (`TenantDep`): today every request is the one
  default tenant; with API keys each key is its tenant, with no change here.
- The run rate is the `limits` library's moving window (never more than N runs in any window
  of the given length; a refused attempt takes nothing), in its memory storage or, with
  REDIS_URL, its Redis storage through redis-py, so every worker shares one window per key.
  `Quota.reset_s` is when the oldest run counted leaves the window (one more is allowed).
- The rate is taken only for a run that is really created: the engine calls the `Admission`
  after its own checks and never for an idempotent retry that attaches to its run
  (app/engine/admission.py). The concurrency slot is checked first, so a request refused for
  it takes no rate token. (Only a request that loses a race after admission, its thread
  taken or the server filled while the rate was checked, has spent a token.)
- Concurrent runs and open streams are slots (app/auth/slots.py): counted in this process, or
  with REDIS_URL in Redis with leases, shared by every worker (app/auth/redis_slots.py). Freed
  by the engine's release (when the run's `end` is written) and by the stream response's end
  (whatever ended it: the run's end, the client going away, a send timeout).
- The rate storage or the slots' Redis unreachable: the request is refused
  (`store_unavailable`, 503), never let through unlimited.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from app.auth.slots import LocalSlots, Slots
from app.engine.admission import Release
from app.engine.errors import EngineError, StoreUnavailable

RETRY_SLOT_S = 1.0  # Retry-After for a full run or stream slot: unknown when one frees


@dataclass(frozen=True)
class Quota:
    """A key's run-creation window: its size, what is left of it, and the seconds until the
    oldest run counted leaves it."""

    limit: int
    remaining: int
    reset_s: float


class LimitExceeded(EngineError):
    """A per-key limit refused the request: `rate_limited`, `too_many_runs` or
    `too_many_streams`; retry after `retry_after_s`. `quota`: the key's run-creation window,
    when the request was one to create a run and runs are rate limited."""

    code = "rate_limited"

    def __init__(
        self, message: str, *, code: str, retry_after_s: float, quota: Quota | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
        self.quota = quota


class KeyLimits:
    """The per-key limits; any of them may be unset (no limit). `slots` count the runs in
    progress and the streams open (default: in this process)."""

    def __init__(
        self,
        *,
        rate: RateLimitItem | None = None,
        max_runs: int | None = None,
        max_streams: int | None = None,
        storage: Storage | None = None,
        slots: Slots | None = None,
    ) -> None:
        if rate is not None and storage is None:
            raise ValueError("a rate limit needs a storage")
        self.rate = rate
        self.max_runs = max_runs
        self.max_streams = max_streams
        self._limiter = MovingWindowRateLimiter(storage) if rate and storage else None
        self.slots: Slots = slots if slots is not None else LocalSlots()

    def admission(self, tenant: str) -> Admission | None:
        """What the engine asks before it creates a run for `tenant`; None: nothing to ask."""
        if self.rate is None and self.max_runs is None:
            return None
        return Admission(self, tenant)

    async def quota(self, tenant: str) -> Quota | None:
        """The tenant's window as it stands, taking nothing (None: no rate limit)."""
        if self._limiter is None or self.rate is None:
            return None
        try:
            return await self._window(self.rate, tenant)
        except StorageError as exc:
            raise _unavailable(exc) from None

    async def open_stream(self, tenant: str) -> Release | None:
        """Take one of the tenant's stream slots (`too_many_streams` if none is left); the
        release frees it, once. None: streams are not limited."""
        if self.max_streams is None:
            return None
        return await self._take("streams", tenant, self.max_streams, "too_many_streams")

    async def _take_run(self, tenant: str) -> Release | None:
        if self.max_runs is None:
            return None
        return await self._take("runs", tenant, self.max_runs, "too_many_runs")

    async def _take(self, kind: str, tenant: str, most: int, code: str) -> Release:
        release = await self.slots.take(kind, tenant, most)
        if release is None:
            what = "runs in progress" if kind == "runs" else "streams open"
            raise LimitExceeded(
                f"this key has {most} {what}, its limit; retry when one ends",
                code=code,
                retry_after_s=RETRY_SLOT_S,
            )
        return release

    async def _hit(self, tenant: str) -> Quota | None:
        if self._limiter is None or self.rate is None:
            return None
        rate = self.rate
        try:
            allowed = await self._limiter.hit(rate, "runs", tenant)
            quota = await self._window(rate, tenant)
        except StorageError as exc:
            raise _unavailable(exc) from None
        if not allowed:
            raise LimitExceeded(
                f"this key may create {rate.amount} runs per {_per(rate)}; retry in"
                f" {math.ceil(quota.reset_s)}s",
                code="rate_limited",
                retry_after_s=max(1.0, quota.reset_s),
                quota=quota,
            )
        return quota

    async def _window(self, rate: RateLimitItem, tenant: str) -> Quota:
        assert self._limiter is not None
        stats = await self._limiter.get_window_stats(rate, "runs", tenant)
        return Quota(
            limit=rate.amount,
            remaining=max(0, stats.remaining),
            reset_s=max(0.0, stats.reset_time - time.time()),
        )


class Admission:
    """One request's admission: a run slot, then a rate token; `quota` is the window after."""

    def __init__(self, limits: KeyLimits, tenant: str) -> None:
        self._limits = limits
        self._tenant = tenant
        self.quota: Quota | None = None

    async def __call__(self) -> Release:
        try:
            release = await self._limits._take_run(self._tenant)
        except LimitExceeded as exc:
            exc.quota = await self._limits.quota(self._tenant)  # its headers say the window
            raise
        try:
            self.quota = await self._limits._hit(self._tenant)
        except BaseException:
            if release is not None:
                release()
            raise
        return release or _nothing


def _nothing() -> None:
    return None


def _per(rate: RateLimitItem) -> str:
    unit = rate.GRANULARITY.name
    return unit if rate.multiples == 1 else f"{rate.multiples} {unit}s"


def _unavailable(exc: StorageError) -> StoreUnavailable:
    return StoreUnavailable(
        f"no new runs: the rate limit storage is unreachable ({type(exc.storage_error).__name__})"
    )
