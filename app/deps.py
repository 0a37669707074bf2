"""Typed accessors for what the lifespan put on `app.state`, for use as route parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.registry import GraphRegistry
from app.runs.manager import RunManager
from app.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _registry(request: Request) -> GraphRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


def _manager(request: Request) -> RunManager:
    return request.app.state.manager  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[GraphRegistry, Depends(_registry)]
ManagerDep = Annotated[RunManager, Depends(_manager)]
