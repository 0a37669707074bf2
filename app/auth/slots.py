"""Slots: the per-key counts of runs in progress and streams open, taken before one starts and
given back when it ends (app/auth/throttle.py decides what a full count means).

Design record
- A `Slots` counts, per key and kind (`runs`, `streams`), the slots held; `take` adds one unless
  the count is at `most` (then None: nothing taken), and returns its release, which frees that
  one slot, once, however often it is called. Why a sync release: it is called from the
  engine's run retirement and a stream response's end, neither of which may await.
- `LocalSlots` counts in this process: exact, nothing to renew; a key with nothing held takes no
  memory. One worker only: another process keeps its own counts. `RedisSlots`
  (app/auth/redis_slots.py) counts in Redis, shared by every worker.
"""

from __future__ import annotations

from typing import Protocol

from app.engine.admission import Release


class Slots(Protocol):
    async def take(self, kind: str, tenant: str, most: int) -> Release | None:
        """One more slot of `kind` for `tenant`, unless it holds `most` (None, nothing taken).
        Raises `StoreUnavailable` when the count cannot be read: never lets one through."""
        ...


class LocalSlots:
    """The counts of this process."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def held(self, kind: str, tenant: str) -> int:
        return self.counts.get((kind, tenant), 0)

    async def take(self, kind: str, tenant: str, most: int) -> Release | None:
        where = (kind, tenant)
        held = self.counts.get(where, 0)
        if held >= most:
            return None
        self.counts[where] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self.counts[where] - 1
            if left:
                self.counts[where] = left
            else:
                del self.counts[where]

        return release
