"""The in-process cancel broker: one process owns every run, so a published request goes
straight to the handler (the manager). Redis pub/sub replaces it when several workers serve."""

from __future__ import annotations

from app.engine.ports import CancelHandler


class LocalCancelBroker:
    def __init__(self) -> None:
        self._handler: CancelHandler | None = None

    async def start(self, handler: CancelHandler) -> None:
        self._handler = handler

    async def publish(self, run_id: str, action: str) -> None:
        if self._handler is not None:
            await self._handler(run_id, action)

    async def close(self) -> None:
        self._handler = None
