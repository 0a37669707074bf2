"""Typed accessors for what the lifespan put on `app.state`, for use as route parameters.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread, and
three thread hops per request for an attribute read cost the event loop most when many streams
start at once (docs/perf/0003-run-start-up.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.auth.throttle import KeyLimits
from app.auth.tokens import StreamTokens
from app.engine.manager import RunManager
from app.engine.registry import GraphRegistry
from app.settings import Settings
from app.streaming.subscriber import FanOut


async def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _registry(request: Request) -> GraphRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


async def _manager(request: Request) -> RunManager:
    return request.app.state.manager  # type: ignore[no-any-return]


async def _fanout(request: Request) -> FanOut:
    return request.app.state.fanout  # type: ignore[no-any-return]


async def _limits(request: Request) -> KeyLimits:
    return request.app.state.limits  # type: ignore[no-any-return]


async def _tenant(request: Request) -> str:
    """Whose request this is: set by app/auth/middleware.py on every request (the default
    tenant without API keys). Missing, the request fails rather than fall back to a tenant."""
    return request.state.tenant  # type: ignore[no-any-return]


async def _stream_tokens(request: Request) -> StreamTokens | None:
    return request.app.state.stream_tokens  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[GraphRegistry, Depends(_registry)]
ManagerDep = Annotated[RunManager, Depends(_manager)]
FanOutDep = Annotated[FanOut, Depends(_fanout)]
TenantDep = Annotated[str, Depends(_tenant)]
StreamTokensDep = Annotated[StreamTokens | None, Depends(_stream_tokens)]
LimitsDep = Annotated[KeyLimits, Depends(_limits)]
