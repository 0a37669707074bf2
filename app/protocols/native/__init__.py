"""The native API: our routes (API.md), our SSE vocabulary and our error bodies."""

from __future__ import annotations

from fastapi import FastAPI

from app.protocols.native import graphs, health, openapi, runs, threads
from app.protocols.native.errors import install_handlers


def install(app: FastAPI) -> None:
    """Add the native routes and error handlers to `app`."""
    install_handlers(app)
    app.include_router(graphs.router)
    app.include_router(runs.router)
    app.include_router(threads.router)
    app.include_router(health.router)
    openapi.install(app)
